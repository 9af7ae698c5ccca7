"""Tests for the fake Hub in tests/hub_server.py: huggingface_hub and transformers round trips, all offline."""

import hashlib
import os
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.request

import pytest

from hub_server import TOKEN, HubServer, hub_server  # noqa: F401  (importing the fixture registers it here)


def _write(folder, files):
    for name, data in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return folder


def test_fixture_points_everything_at_local_server(hub_server):
    from huggingface_hub import constants, hf_api

    assert hub_server.url.startswith("http://127.0.0.1:")
    assert constants.ENDPOINT == hub_server.url == os.environ["HF_ENDPOINT"] == hub_server.env["HF_ENDPOINT"]
    assert hf_api.api.endpoint == hub_server.url  # module-level functions (upload_folder, ...) use this instance
    assert constants.HF_HUB_DISABLE_XET and not constants.HF_HUB_OFFLINE and constants.HF_HUB_DISABLE_TELEMETRY
    assert constants.HF_HUB_CACHE.startswith(hub_server.env["HF_HOME"])
    with pytest.raises(OSError, match="blocked"):  # the real Hub is unreachable for the duration of the test
        socket.create_connection(("huggingface.co", 443), timeout=1)


def test_whoami_and_auth(hub_server):
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    assert HfApi().whoami()["name"] == "testuser"
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(token="hf_wrong").create_repo("org/nope")
    assert err.value.response.status_code == 401


def test_upload_folder_and_snapshot_download_roundtrip(hub_server, tmp_path):
    import huggingface_hub as hh
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import get_session

    files = {"notes.txt": b"hello hub\n", "model.safetensors": os.urandom(3000), "sub/extra.json": b'{"a": 1}'}
    folder = _write(tmp_path / "src", files)

    url = hh.create_repo("org/data")
    assert url == f"{hub_server.url}/org/data" and url.repo_id == "org/data"
    with pytest.raises(HfHubHTTPError) as err:
        hh.create_repo("org/data")
    assert err.value.response.status_code == 409
    assert hh.create_repo("org/data", exist_ok=True).repo_id == "org/data"

    info = hh.upload_folder(repo_id="org/data", folder_path=folder, commit_message="add files")
    assert len(info.oid) == 40
    local = hh.snapshot_download("org/data")
    for name, data in files.items():
        with open(os.path.join(local, name), "rb") as f:
            assert f.read() == data
    # The weights went through the LFS protocol, the text file inline in the commit.
    assert ("PUT", f"/_lfs/{hashlib.sha256(files['model.safetensors']).hexdigest()}") in hub_server.requests
    assert ("POST", "/org/data.git/info/lfs/objects/batch") in hub_server.requests
    ranged = get_session().get(hh.hf_hub_url("org/data", "notes.txt"), headers={"Range": "bytes=6-"})
    assert ranged.status_code == 206 and ranged.content == b"hub\n"
    siblings = {s.rfilename: s for s in hh.model_info("org/data").siblings}
    assert set(siblings) == {".gitattributes", *files}
    assert siblings["model.safetensors"].lfs is not None and siblings["notes.txt"].lfs is None
    tree = {e.path for e in hh.list_repo_tree("org/data")}
    assert tree == {".gitattributes", "notes.txt", "model.safetensors", "sub"}
    paths = hh.HfApi().get_paths_info("org/data", ["sub", "notes.txt", "missing"])
    assert [p.path for p in paths] == ["sub", "notes.txt"]
    assert not hub_server.unhandled


def test_second_upload_updates_repo_and_keeps_history(hub_server, tmp_path):
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi()
    api.create_repo("org/hist")
    weights = os.urandom(2048)
    folder = _write(tmp_path / "v1", {"a.txt": b"v1", "model.safetensors": weights})
    api.upload_folder(repo_id="org/hist", folder_path=folder)
    sha1 = api.model_info("org/hist").sha

    _write(folder, {"a.txt": b"v2", "b.txt": b"new"})
    api.upload_folder(repo_id="org/hist", folder_path=folder)
    info = api.model_info("org/hist")
    assert info.sha != sha1 and len(info.sha) == 40
    assert {s.rfilename for s in info.siblings} == {".gitattributes", "a.txt", "b.txt", "model.safetensors"}
    assert open(hf_hub_download("org/hist", "a.txt"), "rb").read() == b"v2"
    assert open(hf_hub_download("org/hist", "a.txt", revision=sha1), "rb").read() == b"v1"  # old revision
    assert api.model_info("org/hist", revision=sha1).sha == sha1
    assert [c.title for c in api.list_repo_commits("org/hist")][-1] == "initial commit"
    assert api.list_repo_refs("org/hist").branches[0].target_commit == info.sha
    # unchanged LFS file: neither re-uploaded (preupload oid matches) nor PUT twice
    assert sum(1 for m, p in hub_server.requests if m == "PUT") == 1


def test_branches_and_deletions(hub_server):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    api = HfApi()
    api.create_repo("org/br")
    api.upload_file(path_or_fileobj=b"x", path_in_repo="dir/x.txt", repo_id="org/br")
    api.create_branch("org/br", branch="dev")
    api.upload_file(path_or_fileobj=b"only on dev", path_in_repo="dev.txt", repo_id="org/br", revision="dev")
    assert open(hf_hub_download("org/br", "dev.txt", revision="dev"), "rb").read() == b"only on dev"
    assert not api.file_exists("org/br", "dev.txt")  # main untouched
    api.delete_file("dev.txt", repo_id="org/br", revision="dev")
    api.delete_folder("dir", repo_id="org/br")
    assert api.list_repo_files("org/br", revision="dev") == [".gitattributes", "dir/x.txt"]
    assert api.list_repo_files("org/br") == [".gitattributes"]
    with pytest.raises(EntryNotFoundError):
        api.delete_file("nope.txt", repo_id="org/br")


def test_missing_file_repo_and_revision_errors(hub_server):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    api = HfApi()
    api.create_repo("org/err")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("org/err", "nope.bin")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("org/missing", "config.json")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("org/missing")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("org/err", ".gitattributes", revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree("org/err", path_in_repo="nodir"))
    assert api.file_exists("org/err", ".gitattributes") and not api.file_exists("org/err", "nope.bin")
    assert api.repo_exists("org/err") and not api.repo_exists("org/missing")


def _tiny_bert():
    from transformers import BertConfig, BertModel

    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                        vocab_size=100, max_position_embeddings=64)
    return BertModel(config)


def _assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert (sa[k] == sb[k]).all(), k


def test_transformers_push_and_from_pretrained_same_process(hub_server):
    import torch
    from transformers import BertModel

    torch.manual_seed(0)
    model = _tiny_bert()
    model.push_to_hub("org/tiny")
    loaded = BertModel.from_pretrained("org/tiny")
    _assert_same_weights(model, loaded)
    # push again (the repo exists => create_repo(exist_ok=True) path) and reload the new weights
    with torch.no_grad():
        model.pooler.dense.bias.add_(1.0)
    model.push_to_hub("org/tiny")
    _assert_same_weights(model, BertModel.from_pretrained("org/tiny", force_download=True))
    # transformers resolves "main" to a sha once (repo_info), then HEADs/GETs each file at that sha
    assert ("GET", "/api/models/org/tiny/revision/main") in hub_server.requests
    assert any(m == "HEAD" and p.endswith("/config.json") for m, p in hub_server.requests)
    assert not hub_server.unhandled


def test_transformers_roundtrip_in_subprocess(hub_server, tmp_path):
    import torch
    from transformers import BertModel

    torch.manual_seed(1)
    model = _tiny_bert()
    model.push_to_hub("org/tiny")
    torch.save(model.state_dict(), tmp_path / "expected.pt")
    script = textwrap.dedent(f"""
        import os, torch
        from huggingface_hub import constants
        from transformers import BertModel
        assert constants.ENDPOINT == os.environ["HF_ENDPOINT"], constants.ENDPOINT
        loaded = BertModel.from_pretrained("org/tiny")
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert all((loaded.state_dict()[k] == v).all() for k, v in expected.items())
        with torch.no_grad():
            loaded.pooler.dense.bias.fill_(0.5)
        loaded.push_to_hub("org/tiny-from-child")
        print("CHILD-OK")
    """)
    out = subprocess.run([sys.executable, "-c", script], env=hub_server.env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and "CHILD-OK" in out.stdout, out.stderr[-3000:]
    child = BertModel.from_pretrained("org/tiny-from-child")
    assert (child.pooler.dense.bias == 0.5).all()


def test_model_card_push_load_and_validate(hub_server):
    from huggingface_hub import HfApi, ModelCard

    HfApi().create_repo("org/tiny")
    card = ModelCard("---\nlicense: mit\ntags:\n- test\n---\n\n# Tiny\n\nA tiny model.\n")
    card.validate()
    card.push_to_hub("org/tiny")
    loaded = ModelCard.load("org/tiny")
    assert loaded.data.license == "mit" and loaded.data.tags == ["test"] and "A tiny model." in loaded.text
    assert sum(1 for r in hub_server.requests if r == ("POST", "/api/validate-yaml")) >= 2
    # server-side rejections: schema error via ModelCard.validate, YAML syntax error via the pre-commit check
    with pytest.raises(ValueError, match='"license" must be a string'):
        ModelCard("---\nlicense: 42\n---\n# bad\n").validate()
    with pytest.raises(ValueError, match="Invalid YAML"):
        HfApi().upload_file(path_or_fileobj=b"---\nlicense: [mit\n---\n# broken\n", path_in_repo="README.md",
                            repo_id="org/tiny")


def test_activation_is_undone_after_the_test(tmp_path):
    from huggingface_hub import constants, hf_api
    from transformers.utils import hub as tf_hub

    before = (constants.ENDPOINT, constants.HF_HUB_CACHE, hf_api.api.endpoint, tf_hub._hf_api, socket.getaddrinfo,
              os.environ.get("HF_ENDPOINT"))
    with HubServer() as server, pytest.MonkeyPatch.context() as mp:
        server.activate(mp, tmp_path)
        assert constants.ENDPOINT == server.url and os.environ["HF_ENDPOINT"] == server.url
        assert tf_hub.hf_api().endpoint == server.url  # transformers' lazily built HfApi
    after = (constants.ENDPOINT, constants.HF_HUB_CACHE, hf_api.api.endpoint, tf_hub._hf_api, socket.getaddrinfo,
             os.environ.get("HF_ENDPOINT"))
    assert after == before


def test_server_stops_cleanly_without_fixture():
    with HubServer() as server:
        req = urllib.request.Request(f"{server.url}/api/whoami-v2", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req) as resp:
            assert resp.status == 200
        # a keep-alive connection left open must not keep the server from stopping
        idle = socket.create_connection(("127.0.0.1", server.server_address[1]))
    idle.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("hub-server")]
