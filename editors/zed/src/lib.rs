//! Zed runs only the language servers an extension declares, so this dev extension declares `infill`
//! and starts `infill serve` from the project's PATH (or `lsp.infill.binary` in settings.json).
use zed_extension_api::{self as zed, settings::LspSettings, LanguageServerId, Result, Worktree};

struct InfillExtension;

impl zed::Extension for InfillExtension {
    fn new() -> Self {
        InfillExtension
    }

    fn language_server_command(
        &mut self,
        _id: &LanguageServerId,
        worktree: &Worktree,
    ) -> Result<zed::Command> {
        let binary = LspSettings::for_worktree("infill", worktree)
            .ok()
            .and_then(|s| s.binary);
        let args = binary
            .as_ref()
            .and_then(|b| b.arguments.clone())
            .unwrap_or_else(|| vec!["serve".into()]);
        let path = binary
            .and_then(|b| b.path)
            .or_else(|| worktree.which("infill"))
            .ok_or("infill is not on PATH: install infill (`pip install -e /path/to/infill`) or set lsp.infill.binary.path in settings.json")?;
        Ok(zed::Command {
            command: path,
            args,
            env: worktree.shell_env(),
        })
    }

    fn language_server_initialization_options(
        &mut self,
        _id: &LanguageServerId,
        worktree: &Worktree,
    ) -> Result<Option<serde_json::Value>> {
        Ok(LspSettings::for_worktree("infill", worktree)
            .ok()
            .and_then(|s| s.initialization_options))
    }

    fn language_server_workspace_configuration(
        &mut self,
        _id: &LanguageServerId,
        worktree: &Worktree,
    ) -> Result<Option<serde_json::Value>> {
        Ok(LspSettings::for_worktree("infill", worktree)
            .ok()
            .and_then(|s| s.settings))
    }
}

zed::register_extension!(InfillExtension);
