"""Folders in object stores (``s3://``, ``gs://``, ``oci://``), through Streaming's storage layer.

Streaming's uploaders (``CloudUploader``) write and list, its downloaders (``CloudDownloader``)
read. :class:`RemoteFolder` wraps both for one prefix, names objects by their key relative to it,
adds deletion (Streaming has none), and turns provider errors (no credentials, no such bucket,
no client library) into one-line user errors that name the flag and the URI.
"""

from __future__ import annotations

import contextlib
import logging
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llmfoundry.utils.exceptions import ConfigError, MissingDependencyError, UserError

logger = logging.getLogger(__name__)

# The schemes whose Streaming uploader can list a prefix, which reading an input folder and
# checking an output folder both need. (Streaming's azure://, dbfs: and hf:// uploaders cannot.)
LISTABLE_SCHEMES = ("s3", "gs", "oci")
# The client library each scheme needs, for the message when it is missing.
CLIENT_PACKAGES = {"s3": "boto3", "gs": "google-cloud-storage", "oci": "oci"}
# Where each scheme's client looks for credentials, for the message when it fails.
CREDENTIAL_HINTS = {
    "s3": "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and S3_ENDPOINT_URL if not AWS",
    "gs": "GCS_KEY/GCS_SECRET or Google application-default credentials",
    "oci": "~/.oci/config",
}
DOWNLOAD_TIMEOUT_S = 60.0


def is_remote(path: str) -> bool:
    """Whether ``path`` is an object-store URI (``s3://...``, ``dbfs:/...``) rather than a local path."""
    # A one-letter scheme is a Windows drive (C:\...), not an object store.
    return len(urllib.parse.urlparse(path).scheme) > 1


def check_listable(uri: str, flag: str) -> None:
    """Fail unless ``uri`` uses a scheme whose folders can be listed and written.

    Raises:
        ConfigError: naming the flag, the URI and the supported schemes.
    """
    scheme = urllib.parse.urlparse(uri).scheme
    if scheme not in LISTABLE_SCHEMES:
        supported = ", ".join(f"{s}://" for s in LISTABLE_SCHEMES)
        raise ConfigError(
            f"{flag} '{uri}': the '{scheme}' scheme is not supported here (the folder must be "
            f"listed, which Streaming supports for {supported}); use one of those or a local folder"
        )
    if not urllib.parse.urlparse(uri).netloc:
        raise ConfigError(f"{flag} '{uri}' names no bucket; write it as {scheme}://bucket/prefix")


@contextlib.contextmanager
def user_errors(flag: str, uri: str, action: str) -> Iterator[None]:
    """Turn an object-store client's errors inside the block into one-line user errors.

    Args:
        flag: the option that named the URI, for the message.
        uri: the folder's URI.
        action: what was being done, e.g. ``"list the objects"``.

    Raises:
        MissingDependencyError: if the scheme's client library is not installed.
        ConfigError: on any other error from the client (credentials, bucket, network).
    """
    try:
        yield
    except UserError:
        raise
    except ImportError as err:
        package = CLIENT_PACKAGES.get(urllib.parse.urlparse(uri).scheme, err.name or "?")
        raise MissingDependencyError(
            f"{flag} '{uri}' needs the '{package}' package; pip install {package}"
        ) from err
    except Exception as err:  # boto, google and oci each raise their own error types
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        hint = CREDENTIAL_HINTS.get(urllib.parse.urlparse(uri).scheme, "")
        raise ConfigError(
            f"{flag} '{uri}': could not {action} ({type(err).__name__}: {reason}); check the "
            f"bucket name and your credentials ({hint})"
        ) from err


class RemoteFolder:
    """One object-store prefix, with a local folder that uploads are made from.

    Objects are named by their key relative to the prefix (``0/shard.00000.mds``).

    Args:
        uri: the prefix, e.g. ``s3://bucket/path/to/folder``.
        flag: the option that named it, for error messages.
        local: a local folder (created if absent) that :meth:`upload` reads files from.

    Raises:
        ConfigError: on an unsupported scheme, or if the bucket cannot be reached.
        MissingDependencyError: if the scheme's client library is not installed.
    """

    def __init__(self, uri: str, flag: str, local: str | Path) -> None:
        check_listable(uri, flag)
        self.uri = uri.rstrip("/")
        self.flag = flag
        self.local = Path(local)
        self.local.mkdir(parents=True, exist_ok=True)
        parsed = urllib.parse.urlparse(self.uri)
        self.scheme = parsed.scheme
        self.key_prefix = parsed.path.strip("/") + "/" if parsed.path.strip("/") else ""
        # Imported here: Streaming's package loads torch and torchvision, which a converter
        # writing to a local folder never needs.
        from streaming.base.storage import CloudDownloader, CloudUploader

        with user_errors(flag, uri, "reach the bucket"):
            # keep_local: the caller owns the local folder; exist_ok: it may already hold files.
            self._uploader: Any = CloudUploader.get(
                (str(self.local), self.uri), keep_local=True, exist_ok=True
            )
            self._downloader = CloudDownloader.get(self.uri)

    def url(self, name: str) -> str:
        """The URI of the object ``name`` (relative to the prefix)."""
        return f"{self.uri}/{name}"

    def list_files(self) -> dict[str, int | None]:
        """Every object under the prefix (recursively): relative name -> size in bytes, if known.

        Raises:
            ConfigError: if the listing fails (credentials, bucket).
        """
        with user_errors(self.flag, self.uri, "list the objects"):
            client = self._boto_client()
            if client is not None:  # boto lists sizes too
                bucket = urllib.parse.urlparse(self.uri).netloc
                pages = client.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=self.key_prefix
                )
                found: dict[str, int | None] = {
                    obj["Key"]: int(obj["Size"])
                    for page in pages
                    for obj in page.get("Contents", [])
                }
            else:
                found = dict.fromkeys(self._uploader.list_objects() or [])
        return {
            key[len(self.key_prefix) :]: size
            for key, size in sorted(found.items())
            if key.startswith(self.key_prefix) and not key.endswith("/")  # skip folder markers
        }

    def download(self, name: str, local: str | Path) -> None:
        """Download the object ``name`` to the file ``local`` (replacing it if present).

        Raises:
            ConfigError: if the download fails.
        """
        Path(local).unlink(missing_ok=True)  # the downloader skips files that already exist
        with user_errors(self.flag, self.url(name), "download it"):
            self._downloader.download(self.url(name), str(local), DOWNLOAD_TIMEOUT_S)

    def upload(self, name: str) -> None:
        """Upload the local file ``<local>/<name>`` to the object ``name``.

        Raises:
            ConfigError: if the upload fails.
        """
        with user_errors(self.flag, self.url(name), "upload it"):
            self._uploader.upload_file(name)

    def upload_local_files(self, last: Callable[[str], tuple[bool, ...]]) -> None:
        """Upload every file under the local folder, in the order ``last`` gives, with a bar.

        Args:
            last: a sort key of a relative name; files whose key is larger go later (so an
                index or a done-marker can be uploaded after what it describes).

        Raises:
            ConfigError: if an upload fails.
        """
        from tqdm import tqdm  # here: file_utils reads is_remote from this module

        names = sorted(
            (p.relative_to(self.local).as_posix() for p in self.local.rglob("*") if p.is_file()),
            key=lambda name: (*last(name), name),
        )
        for name in tqdm(names, desc=f"uploading to {self.uri}", unit=" files"):
            self.upload(name)

    def delete(self, names: list[str]) -> None:
        """Delete the objects ``names``, in order (so the caller can delete a marker first).

        Raises:
            ConfigError: if a deletion fails.
        """
        if not names:
            return
        bucket = urllib.parse.urlparse(self.uri).netloc
        keys = [self.key_prefix + name for name in names]
        with user_errors(self.flag, self.uri, "delete the old objects"):
            client = self._boto_client()
            if self.scheme == "s3" and client is not None:
                for start in range(0, len(keys), 1000):  # S3's limit per request
                    batch = [{"Key": key} for key in keys[start : start + 1000]]
                    client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            elif client is not None:  # GCS through its S3-compatible API: no batch delete
                for key in keys:
                    client.delete_object(Bucket=bucket, Key=key)
            elif self.scheme == "gs":
                gcs_bucket = self._uploader.gcs_client.bucket(bucket)
                for key in keys:
                    gcs_bucket.delete_blob(key)
            else:  # oci
                namespace = self._uploader.namespace
                oci_bucket = bucket.split("@" + namespace)[0]
                for key in keys:
                    self._uploader.client.delete_object(namespace, oci_bucket, key)

    def _boto_client(self) -> Any:
        """The uploader's boto3 S3 client (s3://, or gs:// with HMAC keys), or None."""
        if self.scheme == "s3":
            return self._uploader.s3
        if self.scheme == "gs" and getattr(self._uploader.authentication, "name", "") == "HMAC":
            return self._uploader.gcs_client
        return None


def earlier_output(remote: RemoteFolder, markers: tuple[str, ...]) -> dict[str, int | None]:
    """The objects under ``remote``'s prefix, which must be none or an earlier output (holding
    one of ``markers``): the check a command makes before its work and again before replacing.

    Raises:
        ConfigError: naming the flag and the prefix if they are something else.
    """
    old = remote.list_files()
    if old and not any(marker in old for marker in markers):
        raise ConfigError(
            f"{remote.flag} '{remote.uri}' holds objects that are not an earlier output (no "
            f"{' or '.join(markers)}); give a new or empty prefix"
        )
    return old


def replace_remote_folder(local: Path, uri: str, flag: str, markers: tuple[str, ...]) -> None:
    """Upload the folder ``local`` to the prefix ``uri``, replacing an earlier output there.

    The prefix's objects are deleted first (a marker first), then the files are uploaded with
    the markers last, so an interrupted upload never looks like a finished output.

    Raises:
        ConfigError: if the prefix holds objects but none of ``markers`` (not an earlier
            output: it is left alone), or an upload or deletion fails.
        MissingDependencyError: if the scheme's client library is not installed.
    """
    remote = RemoteFolder(uri, flag, local)
    old = earlier_output(remote, markers)
    remote.delete(sorted(old, key=lambda name: name not in markers))
    remote.upload_local_files(last=lambda name: (name in markers,))
