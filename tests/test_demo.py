"""The demo app (issue 31), driven through its API with gradio_client against servers on 127.0.0.1.

In this process: the app copynat-demo builds, its `/generate` endpoint giving each decoding's reply (the pipeline's),
the copied spans highlighted, the latency and the copy-attention table. In a Python without copynat: the app.py that
`copynat-push --with_demo` publishes, run as a Space runs it, loading the pushed model from the (fake) Hub.
"""

import runpy
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import pytest

pytest.importorskip("gradio", reason="the demo needs gradio: pip install 'copynat[demo]' (.ci/run installs it)")
pytest.importorskip("gradio_client", reason="driving the demo needs gradio_client: pip install 'copynat[demo]'")

from gradio_client import Client  # noqa: E402

from copynat.demo import app  # noqa: E402
from tiny_echo import WITHOUT_COPYNAT  # noqa: E402

SENTENCE = "我是庫洛洛。"
SHOWN = ["greedy", "beam search (4 beams)", "parallel (one pass)"]  # the tiny model is hybrid: all three run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen | None = None, timeout: float = 300) -> Client:
    """A client of the app at `url` once it answers (the server process still running)."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the app exited ({process.returncode}): {process.stderr.read()[-3000:]}")
        try:
            return Client(url, verbose=False)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.fixture(scope="module")
def served(tiny_echo_folder):
    generator = app.load_generator(str(tiny_echo_folder))
    demo = app.build_demo(generator)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, css=app.CSS)
    try:
        yield generator, wait_for(f"http://127.0.0.1:{port}/")
    finally:
        demo.close()


def check_reply(generator, outputs: tuple, sentence: str) -> dict:
    """The app's outputs for `sentence` say what the pipeline says; returns the JSON of all results."""
    source_view, *columns, table, results = outputs
    assert list(results)[:3] == SHOWN
    for index, (heading, result) in enumerate(results.items()):
        expected = generator(sentence, **app.DECODINGS[heading])[0]["generated_text"]
        assert result["text"] == expected, heading
        assert result["latency_ms"] > 0
        highlighted, latency = columns[2 * index], columns[2 * index + 1]
        assert "".join(piece["token"] for piece in highlighted) == expected  # the whole reply, in pieces
        copied = [piece["token"] for piece in highlighted if piece["class_or_confidence"] == "copied"]
        assert copied == [span["output_text"] for span in sorted(result["copy_spans"],
                                                                 key=lambda span: span["output_start"])]
        assert latency.endswith(f"{len(result['copy_spans'])} copied span(s)") and " ms" in latency
    assert "".join(piece["token"] for piece in source_view) == sentence
    greedy = generator(sentence, decoding="greedy", return_copy_info=True)[0]["copy_info"]
    assert table.count("<tr>") == 1 + len(greedy["output_tokens"])  # a header, then a row per output token
    return results


def test_the_apps_api_gives_the_pipelines_replies(served):
    generator, client = served
    assert client.src.startswith("http://127.0.0.1:")
    outputs = client.predict(SENTENCE, api_name="/generate")
    results = check_reply(generator, outputs, SENTENCE)
    assert any(result["copy_spans"] for result in results.values()), "the tiny model copies some of 庫洛洛"
    with pytest.raises(Exception, match="Type a sentence first"):
        client.predict("  ", api_name="/generate")


def test_copynat_demo_serves_on_localhost(tiny_echo_folder, monkeypatch, capsys):
    import gradio

    launched = {}
    monkeypatch.setattr(gradio.Blocks, "launch", lambda self, **kwargs: launched.update(kwargs))
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    assert app.main(["--model", str(tiny_echo_folder), "--port", "7861"]) == 0
    assert launched["server_name"] == "127.0.0.1" and launched["server_port"] == 7861 and not launched["share"]
    monkeypatch.delenv("COPYNAT_MODEL", raising=False)
    with pytest.raises(SystemExit):
        app.main([])
    assert "--model is required" in capsys.readouterr().err


# The published app.py as a Space runs it: `python app.py`, copynat not installed.
SPACE = WITHOUT_COPYNAT + textwrap.dedent(r"""
    import runpy
    sys.argv = ["app.py"]
    runpy.run_path("app.py", run_name="__main__")
""")


def test_pushed_demo_runs_as_a_space_without_copynat(hub_server, tiny_echo_folder, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    from copynat.training.hub import push_folder

    folder = shutil.copytree(tiny_echo_folder, tmp_path / "model", ignore=shutil.ignore_patterns("checkpoints"))
    push_folder(folder, "org/echo-demo", with_demo=True)
    assert {"app.py", "requirements.txt", "pipeline_copynat.py"} <= set(HfApi().list_repo_files("org/echo-demo"))
    space = tmp_path / "space"
    space.mkdir()
    for name in ("app.py", "requirements.txt"):
        shutil.copy(hf_hub_download("org/echo-demo", name), space / name)
    assert "DEFAULT_MODEL: str | None = 'org/echo-demo'" in (space / "app.py").read_text()
    assert "gradio" in (space / "requirements.txt").read_text()

    port = free_port()
    env = {**hub_server.env, "GRADIO_SERVER_PORT": str(port), "GRADIO_ANALYTICS_ENABLED": "False"}
    process = subprocess.Popen([sys.executable, "-c", SPACE], cwd=space, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        client = wait_for(f"http://127.0.0.1:{port}/", process)
        outputs = client.predict(SENTENCE, api_name="/generate")
    finally:
        process.terminate()
        process.wait(timeout=60)
    generator = app.load_generator(str(tiny_echo_folder))
    check_reply(generator, outputs, SENTENCE)


def test_demo_files_name_the_model(tmp_path):
    from copynat.demo import write_demo_files

    paths = write_demo_files(tmp_path, "org/name")
    assert [p.name for p in paths] == ["app.py", "requirements.txt"]
    namespace = runpy.run_path(str(paths[0]))  # runs alone: no copynat import at module level
    assert namespace["DEFAULT_MODEL"] == "org/name" and namespace["default_model"]() == "org/name"
    write_demo_files(tmp_path)
    assert runpy.run_path(str(paths[0]))["DEFAULT_MODEL"] is None
