;;; eglot_check.el --- drive Emacs + eglot against `infill serve' in batch mode  -*- lexical-binding: t -*-

;; Used by tests/test_other_editors.py and by hand:
;;   INFILL_INIT=init.el INFILL_FILE=sample.py [INFILL_EDIT=1] emacs --batch -l tests/eglot_check.el
;; INFILL_INIT is the user's config (the Emacs block of editors/README.md); INFILL_FILE a Python file
;; whose last line ends where completion is asked.  Prints one line per check, "INFILL <name> <json>",
;; and exits non-zero when a step fails, so the caller can tell which part broke.

(require 'package)
(package-initialize)                    ; Debian's elpa-eglot (Emacs 28); built in from Emacs 29
(require 'json)

(defvar infill-check-timeout (string-to-number (or (getenv "INFILL_TIMEOUT") "120")))

(defun infill-check-report (name value)
  "Print VALUE as JSON on one line tagged NAME."
  (princ (format "INFILL %s %s\n" name (json-encode value))))

(defun infill-check-fail (fmt &rest args)
  (princ (format "INFILL error %s\n" (json-encode (apply #'format fmt args))))
  (kill-emacs 1))

(defun infill-check-wait (pred what)
  "Spin the event loop until PRED returns non-nil (its value) or the timeout passes."
  (let ((deadline (+ (float-time) infill-check-timeout)) value)
    (while (and (not (setq value (funcall pred))) (< (float-time) deadline))
      (accept-process-output nil 0.5))
    (or value (infill-check-fail "timed out after %ss waiting for %s" infill-check-timeout what))))

(load (getenv "INFILL_INIT") nil t)
(find-file (getenv "INFILL_FILE"))
;; `eglot-ensure' (from python-mode-hook) connects after the current command; batch mode has no command
;; loop, so run that hook once by hand, as the editor would after opening the file.
(run-hooks 'post-command-hook)
(defvar infill-server (infill-check-wait #'eglot-current-server "eglot to connect"))
(infill-check-report "connected" (list :server (plist-get (eglot--server-info infill-server) :name)
                                       :managed (and eglot--managed-mode t)))

;; Completion at the end of the file.  The first requests return nothing while the model loads.
(goto-char (point-max))
(skip-chars-backward "\n")
(defvar infill-items
  (infill-check-wait
   (lambda ()
     (let ((result (jsonrpc-request infill-server :textDocument/completion
                                    (eglot--TextDocumentPositionParams))))
       (append (if (vectorp result) result (plist-get result :items)) nil)))
   "a non-empty textDocument/completion"))
(infill-check-report "items" (mapcar (lambda (item) (plist-get item :label)) infill-items))

;; The user's way in: M-x completion-at-point (C-M-i) inserts the sole candidate.
(let ((before (buffer-substring-no-properties (line-beginning-position) (point))))
  (completion-at-point)
  (infill-check-report "completed" (list :before before
                                         :after (buffer-substring-no-properties
                                                 (save-excursion (forward-line 0)
                                                                 (line-beginning-position))
                                                 (point-max)))))

;; Code actions on the whole function, and the search command via workspace/executeCommand.
(let ((actions (jsonrpc-request infill-server :textDocument/codeAction
                                (list :textDocument (eglot--TextDocumentIdentifier)
                                      :range (list :start (eglot--pos-to-lsp-position (point-min))
                                                   :end (eglot--pos-to-lsp-position (point-max)))
                                      :context (list :diagnostics [])))))
  (infill-check-report "actions" (mapcar (lambda (a) (plist-get a :title)) actions)))
;; The search command (the index may still be building: retry until it finds something).
(infill-check-report "search"
                     (infill-check-wait
                      (lambda ()
                        (let ((hits (jsonrpc-request infill-server :workspace/executeCommand
                                                     (list :command "infill.search"
                                                           :arguments (vector (list :query "even number"
                                                                                    :limit 3))))))
                          (and (sequencep hits) (> (length hits) 0) (length hits))))
                      "infill.search results"))
;; workspace/symbol, what `M-x xref-find-apropos' asks (the index may still be building: retry).
(infill-check-report "symbols"
                     (infill-check-wait
                      (lambda ()
                        (mapcar (lambda (s) (plist-get s :name))
                                (jsonrpc-request infill-server :workspace/symbol '(:query "area"))))
                      "workspace/symbol results"))

;; Run the "Add docstring" action on the first function as `M-x eglot-code-actions' does: its command
;; goes to workspace/executeCommand, and the server answers with a workspace/applyEdit.
(when (equal (getenv "INFILL_EDIT") "1")
  (eglot--signal-textDocument/didChange)
  (goto-char (point-min))
  (let* ((end (save-excursion (forward-line 2) (point)))
         (actions (jsonrpc-request infill-server :textDocument/codeAction
                                   (list :textDocument (eglot--TextDocumentIdentifier)
                                         :range (list :start (eglot--pos-to-lsp-position (point-min))
                                                      :end (eglot--pos-to-lsp-position end))
                                         :context (list :diagnostics []))))
         (action (seq-find (lambda (a) (equal (plist-get a :title) "Add docstring")) actions))
         (command (plist-get action :command))
         (eglot-confirm-server-initiated-edits nil) ; a user answers "Proceed? (y or n)"; batch cannot
         (before (buffer-string))
         (start (float-time)))
    (unless command (infill-check-fail "no Add docstring action in %S" actions))
    (condition-case err
        (eglot-execute-command infill-server (plist-get command :command) (plist-get command :arguments))
      (error (infill-check-report "execute_error" (error-message-string err))))
    (infill-check-wait (lambda () (not (equal before (buffer-string)))) "the edit to be applied")
    (infill-check-report "edited" (list :seconds (round (- (float-time) start))
                                        :text (buffer-substring-no-properties (point-min) (point-max))))))

(eglot-shutdown infill-server)
(kill-emacs 0)

;;; eglot_check.el ends here
