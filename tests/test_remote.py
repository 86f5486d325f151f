"""The remote backend against a real llama.cpp server (xllamacpp), and its protocol corner cases against a
small stdlib HTTP server that misbehaves on purpose. Everything on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time

import pytest
from fake_server import FakeServer, Handler, event, send, stream_start

from inference import FimParts, InferenceError
from inference.remote import RemoteBackend, RemoteConfig, detect_remote_family
from lsp_server.config import Settings

ADD = FimParts("def add(a, b):\n    return", "\n")


# --------------------------------------------------------------------------- a real llama.cpp server
@pytest.mark.parametrize("kind", ["llama.cpp", "openai"])
def test_real_server_fim_completion_and_prompt_cache(llama_server, kind: str) -> None:
    backend = RemoteBackend(RemoteConfig(llama_server.url, kind))
    assert backend.family.name == "qwen2.5-coder"  # detected from the served model's id (its GGUF path)
    assert backend.native_fim == (kind == "llama.cpp")
    first = backend.complete(ADD, max_new_tokens=12, stop=("\n",))
    second = backend.complete(ADD, max_new_tokens=12, stop=("\n",))
    assert first.text.strip() and first.finish_reason in ("eos", "stop", "length")
    assert second.text == first.text  # greedy: the same answer
    assert second.prompt_tokens > 0 and second.reused_tokens >= second.prompt_tokens // 2  # server's prompt cache


def test_infill_and_templated_prompt_agree(llama_server) -> None:
    """`/infill` renders the model's FIM tokens on the server; the openai kind renders the registry's
    template here: for the same parts, greedy decoding must give the same answer."""
    native = RemoteBackend(RemoteConfig(llama_server.url, "llama.cpp")).complete(ADD, max_new_tokens=16)
    templated = RemoteBackend(RemoteConfig(llama_server.url, "openai")).complete(ADD, max_new_tokens=16)
    assert native.text and native.text == templated.text


def test_a_typed_middle_goes_after_the_middle_token_on_both_paths(llama_server) -> None:
    """`FimParts.middle` is llama.cpp's `/infill` `prompt` (after its FIM middle token) and the end of the
    templated prompt: the same parts give the same greedy answer both ways."""
    typed = FimParts("def add(a, b):\n", "\n", middle="    return a +")
    native = RemoteBackend(RemoteConfig(llama_server.url, "llama.cpp")).complete(typed, max_new_tokens=8)
    templated = RemoteBackend(RemoteConfig(llama_server.url, "openai")).complete(typed, max_new_tokens=8)
    assert native.text and native.text == templated.text


def test_stop_rule_closes_the_stream_and_frees_the_slot(llama_server) -> None:
    backend = RemoteBackend(RemoteConfig(llama_server.url, "llama.cpp"))
    before = llama_server.metrics()["tokens_predicted_total"]
    result = backend.complete("def fibonacci(n):\n", max_new_tokens=400, stop_rule=lambda text: len(text) >= 8)
    assert result.finish_reason == "rule" and len(result.text) >= 8
    _wait_idle(llama_server)
    assert llama_server.metrics()["tokens_predicted_total"] - before < 100  # far from the 400 asked for


def test_cancel_closes_the_stream_and_frees_the_slot(llama_server) -> None:
    backend = RemoteBackend(RemoteConfig(llama_server.url, "openai"))
    cancel = threading.Event()
    before = llama_server.metrics()["tokens_predicted_total"]
    deltas = []
    for delta in backend.generate("def fibonacci(n):\n", max_new_tokens=400, cancel=cancel):
        deltas.append(delta)
        cancel.set()  # cancelled while the server is still generating
    assert deltas
    _wait_idle(llama_server)
    assert llama_server.metrics()["tokens_predicted_total"] - before < 100


def test_edit_goes_to_the_chat_endpoint_and_continues_the_seed(llama_server) -> None:
    backend = RemoteBackend(RemoteConfig(llama_server.url, "llama.cpp"))
    assert backend.is_instruct  # the server reports a chat template
    prompt = backend.chat_prompt([{"role": "user", "content": "Write a Python function add(a, b) returning a + b."}])
    prompt = prompt + "```python\ndef add("
    reply = backend.complete(prompt, max_new_tokens=48, stop=("```",)).text
    # the assistant's message goes on from the seed: it neither starts over nor repeats the seeded header
    assert reply.strip() and "def add(" not in reply and not reply.lstrip().startswith(("```", "python"))


def test_prefill_warms_the_servers_cache(llama_server) -> None:
    backend = RemoteBackend(RemoteConfig(llama_server.url, "llama.cpp"))
    parts = FimParts("import os\n\n\ndef list_python_files(root):\n    return [", "]\n")
    assert backend.prefill(parts) > 0
    after = backend.complete(parts, max_new_tokens=8)
    assert after.reused_tokens >= after.prompt_tokens - 2


def test_unknown_model_is_a_clear_error(llama_server) -> None:
    problems: list[str | None] = []
    backend = RemoteBackend(RemoteConfig(llama_server.url, "openai", model="no-such-model"), on_problem=problems.append)
    with pytest.raises(InferenceError, match="does not serve model 'no-such-model'"):
        backend.complete(ADD, max_new_tokens=4)
    assert len(problems) == 1  # reported once, at construction, not again per request


def test_api_key_from_the_environment(keyed_llama_server, monkeypatch) -> None:
    config = RemoteConfig(keyed_llama_server.url, "llama.cpp", api_key_env="INFILL_TEST_KEY")
    monkeypatch.setenv("INFILL_TEST_KEY", "wrong")
    with pytest.raises(InferenceError, match=r"refused the API key \(HTTP 401\).*INFILL_TEST_KEY") as err:
        RemoteBackend(config).complete(ADD, max_new_tokens=4)
    assert "wrong" not in str(err.value)  # the key itself is never in a message
    monkeypatch.setenv("INFILL_TEST_KEY", "sesame-123")
    assert RemoteBackend(config).complete(ADD, max_new_tokens=4).text


def _wait_idle(server, timeout: float = 5.0) -> None:
    """llama.cpp frees a slot when it notices the closed connection (within about a second)."""
    deadline = time.monotonic() + timeout
    while server.busy_slots() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.busy_slots() == 0


# ------------------------------------------------------------------------ protocol corner cases (fake_server)
def _good(h) -> None:
    stream_start(h)
    for piece in (" a", " +", " b"):
        event(h, piece)
    event(h, "", "stop")
    event(h, raw="[DONE]")


def _server_error_mid_stream(h) -> None:
    stream_start(h)
    event(h, " a")
    event(h, raw=json.dumps({"error": {"code": 500, "message": "CUDA out of memory"}}))


def _cut(h) -> None:
    stream_start(h)
    event(h, " a")  # and the connection closes: no finish_reason, no [DONE]


def _slow_first_byte(h) -> None:
    time.sleep(3)
    _good(h)


def _html(h) -> None:
    send(h, 200, b"<!DOCTYPE html><html><body>Sign in</body></html>", "text/html")


def _html_502(h) -> None:
    send(h, 502, b"<html><body>Bad Gateway</body></html>", "text/html")


def _huge(h) -> None:
    stream_start(h)
    chunk = ("data: " + json.dumps({"choices": [{"text": "x" * 1000, "finish_reason": None}]}) + "\n\n").encode()
    try:
        for _ in range(10_000):  # about 10 MB
            h.wfile.write(chunk)
    except OSError:  # the client hung up, as it should
        pass


def _huge_line(h) -> None:
    stream_start(h)
    try:
        h.wfile.write(b"data: " + b"x" * 10 * 2**20 + b"\n\n")  # 10 MB without a newline
    except OSError:
        pass


def _unauthorized(h) -> None:
    send(h, 401, json.dumps({"error": {"message": "Invalid API Key"}}).encode(), "application/json")


def _remote(url: str, **kwargs) -> tuple[RemoteBackend, list[str | None]]:
    problems: list[str | None] = []
    return RemoteBackend(RemoteConfig(url, "openai", **kwargs), on_problem=problems.append), problems


def test_openai_request_shape_and_answer() -> None:
    fake = FakeServer(_good)
    try:
        backend, problems = _remote(fake.url)
        assert backend.complete(ADD, max_new_tokens=8, stop=("\n",)).text == " a + b"
        body = fake.bodies[-1]
        assert body["stream"] is True and "suffix" not in body and body["max_tokens"] == 8
        assert body["prompt"] == backend.family.render(ADD) and body["stop"] == ["\n"]
        assert problems == []
    finally:
        fake.close()


def _ollama(h) -> None:
    stream_start(h)
    field = (lambda t: {"message": {"role": "assistant", "content": t}}) if h.path == "/api/chat" else \
        (lambda t: {"response": t})
    for piece in (" a", " +", " b"):
        h.wfile.write((json.dumps({**field(piece), "done": False}) + "\n").encode())
    end = {**field(""), "done": True, "done_reason": "stop", "prompt_eval_count": 9}
    h.wfile.write((json.dumps(end) + "\n").encode())


def test_ollama_generate_raw_and_chat() -> None:
    fake = FakeServer(_ollama, models=("qwen2.5-coder:1.5b-base",))
    try:
        backend = RemoteBackend(RemoteConfig(fake.url, "ollama"))
        assert backend.model == "qwen2.5-coder:1.5b-base" and backend.family.name == "qwen2.5-coder"
        result = backend.complete(ADD, max_new_tokens=8)
        assert result.text == " a + b" and result.prompt_tokens == 9
        body = fake.bodies[-1]
        assert fake.paths[-1] == "/api/generate" and body["raw"] is True
        assert body["prompt"] == backend.family.render(ADD)
        assert body["options"]["num_predict"] == 8
        prompt = backend.chat_prompt([{"role": "user", "content": "add"}]) + "```python\n"
        assert backend.complete(prompt, max_new_tokens=8).text == " a + b"
        assert fake.paths[-1] == "/api/chat"
        assert fake.bodies[-1]["messages"][-1] == {"role": "assistant", "content": "```python\n"}
    finally:
        fake.close()


def _chat(h) -> None:
    stream_start(h)
    for piece in (" a", " +", " b"):
        event(h, raw=json.dumps({"choices": [{"delta": {"content": piece}, "finish_reason": None}]}))
    event(h, raw=json.dumps({"choices": [{"delta": {}, "finish_reason": "stop"}]}))
    event(h, raw="[DONE]")


def test_openai_edit_goes_to_chat_completions_with_the_seed_continued() -> None:
    fake = FakeServer(_chat)
    try:
        backend, _ = _remote(fake.url)
        prompt = backend.chat_prompt([{"role": "user", "content": "add"}]) + "```python\n"
        assert backend.complete(prompt, max_new_tokens=8, stop=("```",)).text == " a + b"
        body = fake.bodies[-1]
        assert fake.paths[-1] == "/v1/chat/completions" and body["continue_final_message"] is True
        assert body["messages"] == [{"role": "user", "content": "add"},
                                    {"role": "assistant", "content": "```python\n"}]
    finally:
        fake.close()


@pytest.mark.parametrize("answer, message", [
    (_server_error_mid_stream, "failed mid-answer: CUDA out of memory"),
    (_cut, "ended before the answer did"),
    (_html, "answered a web page"),
    (_html_502, "answered a web page"),
    (_huge, "sent far more than the 8 tokens asked for"),
    (_huge_line, "sent a line of more than 256 KB"),
    (_unauthorized, r"refused the API key \(HTTP 401\); set backend.apiKeyEnv"),
])
def test_bad_answers_are_one_clear_error(answer: Handler, message: str) -> None:
    fake = FakeServer(answer)
    try:
        backend, problems = _remote(fake.url)
        start = time.monotonic()
        for _ in range(2):  # a second request tries again, and is not reported again
            with pytest.raises(InferenceError, match=message) as err:
                backend.complete(ADD, max_new_tokens=8)
            assert fake.url in str(err.value)
        assert time.monotonic() - start < 10
        assert len(fake.bodies) == 2 and problems == [str(err.value)]
    finally:
        fake.close()


def test_slow_first_byte_times_out_and_a_cancel_does_not_wait_for_it() -> None:
    fake = FakeServer(_slow_first_byte)
    try:
        backend, _ = _remote(fake.url, timeout_ms=500)
        start = time.monotonic()
        with pytest.raises(InferenceError, match="did not answer within 500 ms"):
            backend.complete(ADD, max_new_tokens=8)
        assert time.monotonic() - start < 2
        patient, problems = _remote(fake.url, timeout_ms=20_000)
        cancel = threading.Event()
        threading.Timer(0.3, cancel.set).start()
        start = time.monotonic()
        assert patient.complete(ADD, max_new_tokens=8, cancel=cancel).finish_reason == "cancel"
        assert time.monotonic() - start < 1.5 and problems == []
    finally:
        fake.close()


def test_unreachable_server_and_recovery() -> None:
    from llama_server import free_port

    port = free_port()
    backend, problems = _remote(f"http://127.0.0.1:{port}")
    assert problems and "cannot reach" in problems[0] and str(port) in problems[0]
    with pytest.raises(InferenceError, match="cannot reach"):
        backend.complete(ADD, max_new_tokens=8)
    assert len(problems) == 1  # no storm
    fake = FakeServer(_good, port=port)  # the server comes up
    try:
        assert backend.complete(ADD, max_new_tokens=8).text == " a + b"
        assert problems[-1] is None  # it works again: the next outage is reported again
    finally:
        fake.close()


def test_bad_configuration_is_a_clear_error_at_load() -> None:
    with pytest.raises(InferenceError, match="not an http"):
        RemoteBackend(RemoteConfig("gpu-box:8080"))
    with pytest.raises(InferenceError, match="unknown backend.kind"):
        RemoteBackend(RemoteConfig("http://127.0.0.1:1", kind="tgi"))


def test_plain_http_to_another_host_warns() -> None:
    warnings: list[str] = []
    RemoteBackend(RemoteConfig("http://192.0.2.1:8080", timeout_ms=200), warn=warnings.append)
    assert warnings and "unencrypted" in warnings[0]
    warnings.clear()
    RemoteBackend(RemoteConfig("http://127.0.0.1:1", timeout_ms=200), warn=warnings.append)
    assert warnings == []


def test_family_from_served_model_ids() -> None:
    assert detect_remote_family("Qwen/Qwen2.5-Coder-7B").name == "qwen2.5-coder"
    assert detect_remote_family("bigcode/starcoder2-15b").name == "starcoder"
    assert detect_remote_family("deepseek-coder:6.7b-base").name == "deepseek-coder"
    assert detect_remote_family("codellama:7b-code").name == "codellama"
    assert detect_remote_family("meta-llama/Llama-3-8B").name == "plain"
    assert detect_remote_family("anything", explicit="codegemma").name == "codegemma"


def test_backend_settings_parse_field_by_field() -> None:
    settings = Settings()
    ignored = settings.update({"infill": {"backend": {"url": "http://gpu-box:8080", "kind": "llama.cpp",
                                                      "apiKeyEnv": "TEAM_KEY", "timeoutMs": "soon", "x": 1}}})
    assert ignored == []
    b = settings.backend
    assert (b.url, b.kind, b.api_key_env, b.timeout_ms, b.model) == ("http://gpu-box:8080", "llama.cpp", "TEAM_KEY",
                                                                      30_000, "")
    settings.update({"backend": {"url": "http://x:1", "kind": "tgi"}})
    assert settings.backend.kind == "openai"  # a kind we do not speak keeps the default
    assert settings.update({"backend": "http://x:1"}) == ["backend"]  # not an object: ignored, kept
    assert settings.backend.url == "http://x:1"
    settings.update({"backend": None})
    assert settings.backend.url == ""
