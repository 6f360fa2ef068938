"""convert_text_to_mds with object-store folders, against an in-process S3 (moto)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from llmfoundry.command_utils.data_prep.convert_text_to_mds import (
    DONE_FILENAME,
    convert_text_to_mds,
)
from llmfoundry.data import StreamingTextDataset
from llmfoundry.utils.exceptions import ConfigError, DatasetError
from llmfoundry.utils.object_store import RemoteFolder
from tests.data.conftest import BUCKET
from tests.data.test_converters import EOS, read_tokens, write_text_files


@pytest.fixture
def documents(corpus_texts: list[str]) -> list[str]:
    """Six documents of 3,000 characters, cut from the corpus."""
    return [text[start : start + 3000] for text in corpus_texts[:3] for start in (0, 3000)]


def text_to_mds(tokenizer_dir: Path, out: str, src: str, **overrides: object):
    options: dict[str, Any] = {
        "concat_tokens": 64,
        "eos_text": EOS,
        "compression": None,
        "processes": 1,
    }
    options.update(overrides)
    return convert_text_to_mds(str(tokenizer_dir), out, src, **options)


def upload_folder(client: Any, folder: Path, prefix: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(folder).as_posix()}")


def objects(client: Any, prefix: str) -> dict[str, str]:
    """Key (relative to ``prefix``) -> ETag of every object under ``prefix``."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    return {
        obj["Key"][len(prefix) + 1 :]: obj["ETag"]
        for page in pages
        for obj in page.get("Contents", [])
    }


def download_prefix(client: Any, prefix: str, folder: Path) -> Path:
    for name in objects(client, prefix):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        client.download_file(BUCKET, f"{prefix}/{name}", str(folder / name))
    return folder


def test_s3_input_gives_the_same_samples_as_the_local_folder(
    s3: Any, tmp_path: Path, tokenizer_dir: Path, documents: list[str]
) -> None:
    src = write_text_files(tmp_path / "txt", documents)
    (src / "README.md").write_text("not a text file", encoding="utf-8")
    upload_folder(s3, src, "raw/txt")

    remote = text_to_mds(tokenizer_dir, str(tmp_path / "from_s3"), f"s3://{BUCKET}/raw/txt/")
    local = text_to_mds(tokenizer_dir, str(tmp_path / "from_disk"), str(src))

    assert read_tokens(tmp_path / "from_s3") == read_tokens(tmp_path / "from_disk")
    assert (remote.num_samples, remote.rows_read) == (local.num_samples, len(documents))
    marker = json.loads((tmp_path / "from_s3" / DONE_FILENAME).read_text(encoding="utf-8"))
    assert marker["args"]["input_folder"] == f"s3://{BUCKET}/raw/txt"
    local_marker = json.loads((tmp_path / "from_disk" / DONE_FILENAME).read_text(encoding="utf-8"))
    assert marker["files"] == local_marker["files"]  # the same relative names and sizes


def test_s3_output_with_two_processes_holds_the_local_samples(
    s3: Any, tmp_path: Path, tokenizer_dir: Path, documents: list[str]
) -> None:
    src = write_text_files(tmp_path / "txt", documents)

    summary = text_to_mds(tokenizer_dir, f"s3://{BUCKET}/mds/train", str(src), processes=2)
    text_to_mds(tokenizer_dir, str(tmp_path / "local"), str(src), processes=2)

    uploaded = objects(s3, "mds/train")
    assert {"index.json", DONE_FILENAME} <= uploaded.keys()  # one index, whatever the processes
    assert not any(name.startswith(".") and name != DONE_FILENAME for name in uploaded)
    downloaded = download_prefix(s3, "mds/train", tmp_path / "downloaded")
    assert read_tokens(downloaded) == read_tokens(tmp_path / "local")
    streamed = StreamingTextDataset(
        tokenizer=None,
        max_seq_len=10**6,
        remote=f"s3://{BUCKET}/mds",
        local=str(tmp_path / "cache"),
        split="train",
    )
    assert [streamed[i].tolist() for i in range(streamed.num_samples)] == read_tokens(downloaded)
    assert summary.out == f"s3://{BUCKET}/mds/train"
    assert summary.num_samples == len(read_tokens(downloaded))


def test_s3_output_rerun_is_a_no_op_and_a_different_one_needs_reprocess(
    s3: Any, tmp_path: Path, tokenizer_dir: Path, documents: list[str]
) -> None:
    src, out = write_text_files(tmp_path / "txt", documents), f"s3://{BUCKET}/mds"
    first = text_to_mds(tokenizer_dir, out, str(src), processes=2)
    before = objects(s3, "mds")

    assert text_to_mds(tokenizer_dir, out, str(src), processes=2) == first
    assert objects(s3, "mds") == before

    with pytest.raises(ConfigError, match=r"concat_tokens 64 \(now 32\).*pass --reprocess"):
        text_to_mds(tokenizer_dir, out, str(src), concat_tokens=32)
    assert objects(s3, "mds") == before

    redone = text_to_mds(tokenizer_dir, out, str(src), concat_tokens=32, reprocess=True)

    after = objects(s3, "mds")
    assert not any(name.startswith(("0/", "1/")) for name in after)  # the old groups are gone
    samples = read_tokens(download_prefix(s3, "mds", tmp_path / "downloaded"))
    assert len(samples) == redone.num_samples > first.num_samples
    assert {len(sample) for sample in samples} == {32}


def test_a_failed_conversion_leaves_the_s3_output_untouched(
    s3: Any, tmp_path: Path, tokenizer_dir: Path, documents: list[str]
) -> None:
    src = write_text_files(tmp_path / "txt", documents)
    (src / "zz_broken.txt").write_bytes(b"\xff\xfe not utf-8")

    with pytest.raises(DatasetError, match=r"zz_broken\.txt' is not UTF-8"):
        text_to_mds(tokenizer_dir, f"s3://{BUCKET}/mds", str(src), processes=2)

    assert objects(s3, "mds") == {}


def test_an_interrupted_upload_never_looks_finished(
    s3: Any,
    tmp_path: Path,
    tokenizer_dir: Path,
    documents: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src, out = write_text_files(tmp_path / "txt", documents), f"s3://{BUCKET}/mds"
    uploaded: list[str] = []
    real_upload = RemoteFolder.upload

    def upload_then_fail_at_the_marker(self: RemoteFolder, name: str) -> None:
        if name == DONE_FILENAME:
            raise ConnectionError("network lost")
        real_upload(self, name)
        uploaded.append(name)

    with monkeypatch.context() as patched, pytest.raises(ConnectionError):
        patched.setattr(RemoteFolder, "upload", upload_then_fail_at_the_marker)
        text_to_mds(tokenizer_dir, out, str(src), processes=2)

    # Everything but the marker went up, the index after every shard.
    assert uploaded[-1] == "index.json"
    assert set(uploaded) == set(objects(s3, "mds"))
    assert DONE_FILENAME not in objects(s3, "mds")
    with pytest.raises(ConfigError, match=r"holds no finished conversion.*--reprocess"):
        text_to_mds(tokenizer_dir, out, str(src), processes=2)
    text_to_mds(tokenizer_dir, out, str(src), processes=2, reprocess=True)
    assert DONE_FILENAME in objects(s3, "mds")


def test_remote_folders_fail_in_one_line_naming_the_flag(
    s3: Any, tmp_path: Path, tokenizer_dir: Path, documents: list[str]
) -> None:
    src = write_text_files(tmp_path / "txt", documents)
    with pytest.raises(ConfigError, match=r"--input_folder 'ftp://host/txt': the 'ftp' scheme"):
        text_to_mds(tokenizer_dir, str(tmp_path / "mds"), "ftp://host/txt")
    with pytest.raises(ConfigError, match=r"--output_folder 'azure://c/mds'.*s3://, gs://, oci://"):
        text_to_mds(tokenizer_dir, "azure://c/mds", str(src))
    with pytest.raises(
        DatasetError, match=rf"--input_folder 's3://{BUCKET}/nothing' holds no \*\.txt"
    ):
        text_to_mds(tokenizer_dir, str(tmp_path / "mds"), f"s3://{BUCKET}/nothing")
    with pytest.raises(
        ConfigError, match=r"--output_folder 's3://no-such-bucket/mds': could not reach the bucket"
    ):
        text_to_mds(tokenizer_dir, "s3://no-such-bucket/mds", str(src))
    with pytest.raises(ConfigError, match="contains --input_folder"):
        text_to_mds(tokenizer_dir, f"s3://{BUCKET}/data", f"s3://{BUCKET}/data/txt")


def test_missing_credentials_fail_in_one_line(
    tmp_path: Path, tokenizer_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("S3_ENDPOINT_URL", raising=False)
    with pytest.raises(ConfigError) as caught:
        text_to_mds(tokenizer_dir, str(tmp_path / "mds"), f"s3://{BUCKET}/txt")
    message = str(caught.value)
    assert message.startswith(f"--input_folder 's3://{BUCKET}/txt': could not reach the bucket")
    assert "NoCredentialsError" in message and "\n" not in message
