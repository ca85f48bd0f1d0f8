"""S3-compatible stores: AWS S3, MinIO, DigitalOcean Spaces, GCS (interoperable XML API)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, cast

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ParamValidationError,
    ProfileNotFound,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.utils import parse_timestamp as botocore_parse_timestamp

from mediamirror.errors import ConfigError, NotFoundError, StoreError, TransientProcessingError
from mediamirror.stores.base import ObjectInfo
from mediamirror.stores.timeouts import StoreTimeouts

_DENIED = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
    "403",
}


def parse_timestamp(value: Any) -> datetime:
    """Botocore's timestamp parser for the ISO 8601 form listings carry, a hundred times
    cheaper.

    Botocore parses every ``LastModified`` of a listing page with ``dateutil`` (about
    60 us a key, most of a listing's client time); ``datetime.fromisoformat`` reads
    ``2024-03-05T12:34:56.789Z`` (S3, MinIO, GCS; any fraction, ``Z`` or an offset) to
    the same aware datetime. Anything else (HTTP dates of ``head_object``, epoch numbers)
    goes to botocore's own parser.
    """
    if isinstance(value, str) and len(value) > 19 and value[10] == "T":
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is not None:
                return parsed
    return botocore_parse_timestamp(value)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is UTC else value.astimezone(UTC)


class S3Store:
    """A bucket and prefix behind any S3-compatible endpoint."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        scheme: str = "s3",
        endpoint_url: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        addressing: str = "auto",
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        page_size: int = 1000,
        credentials_hint: str = "",
        timeouts: StoreTimeouts | None = None,
    ) -> None:
        self.scheme = scheme
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.page_size = min(max(page_size, 1), 1000)
        self.credentials_hint = credentials_hint
        try:
            session = boto3.session.Session(
                profile_name=profile,
                aws_access_key_id=access_key,
                aws_secret_access_key=secret_key,
                aws_session_token=session_token,
            )
        except ProfileNotFound as exc:
            raise ConfigError(f"AWS profile {profile!r} is not configured") from exc
        # This session's own parser factory: other sessions keep botocore's parser.
        parsers = session._session.get_component("response_parser_factory")
        parsers.set_parser_defaults(timestamp_parser=parse_timestamp)
        self.timeouts = timeouts = timeouts or StoreTimeouts()
        config = Config(
            s3=cast(Any, {"addressing_style": addressing}),
            # "standard" retries 500, 502, 503, 504, throttling, resets and timeouts with
            # jittered exponential backoff; a read timeout turns a stalled endpoint into
            # a retry instead of a hang.
            # (botocore's "max_attempts" counts retries only; "total_max_attempts" all tries.)
            retries={"total_max_attempts": timeouts.max_attempts, "mode": "standard"},
            connect_timeout=timeouts.connect,
            read_timeout=timeouts.read,
            max_pool_connections=16,
            # GCS and older MinIO reject the newer default checksum headers.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client: Any = session.client(
            "s3", endpoint_url=endpoint_url, region_name=region or None, config=config
        )

    @property
    def where(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.prefix}"

    def object_url(self, key: str) -> str:
        return f"{self.scheme}://{self.bucket}/{key}"

    def _fail(self, exc: Exception, action: str, key: str | None = None) -> NoReturn:
        """Translate a boto error into one clear line."""
        where = self.object_url(key) if key is not None else self.where
        endpoint = self.endpoint_url or "the default AWS endpoint"
        if isinstance(exc, NoCredentialsError):
            hint = self.credentials_hint or "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or --profile"
            raise StoreError(f"no credentials to {action} {where}: set {hint}") from exc
        if isinstance(exc, EndpointConnectionError):
            raise StoreError(f"cannot reach {endpoint} to {action} {where}") from exc
        fault = self._network_fault(exc)
        if fault is not None:
            raise StoreError(f"cannot {action} {where}: {endpoint} {fault}") from exc
        if isinstance(exc, ParamValidationError):
            raise StoreError(f"cannot {action} {where}: {exc}") from exc
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                raise StoreError(f"bucket {self.bucket!r} does not exist at {endpoint}") from exc
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise NotFoundError(f"{where} does not exist") from exc
            if code in _DENIED or status == 403:
                hint = (
                    f" (credentials from {self.credentials_hint})" if self.credentials_hint else ""
                )
                raise StoreError(f"access denied to {where}: check the credentials{hint}") from exc
            message = err.get("Message") or code or str(exc)
            if isinstance(status, int) and status >= 500:
                # Retried already (see __init__): say so, users then know it is not a blip.
                attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
                message = f"{message} (HTTP {status}, {attempts} attempt(s))"
            raise StoreError(f"cannot {action} {where}: {message}") from exc
        if isinstance(exc, BotoCoreError):
            raise StoreError(f"cannot {action} {where}: {exc}") from exc
        raise exc

    def _network_fault(self, exc: Exception) -> str | None:
        """What went wrong on the wire, in words, once botocore's retries are spent.

        Botocore's own messages quote the request URL (a presigned one holds a signature)
        and name no cause a user can act on.
        """
        attempts = f"{self.timeouts.max_attempts} attempt(s)"
        if isinstance(exc, ReadTimeoutError):
            return f"did not answer within {self.timeouts.read:g} s ({attempts})"
        if isinstance(exc, ConnectTimeoutError):
            return f"did not accept a connection within {self.timeouts.connect:g} s ({attempts})"
        if isinstance(exc, ConnectionClosedError | ResponseStreamingError | IncompleteReadError):
            return f"closed the connection before the answer was complete ({attempts})"
        if isinstance(exc, HTTPClientError):
            return f"broke the connection ({attempts})"
        return None

    def check(self) -> None:
        try:
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except (BotoCoreError, ClientError) as exc:
            self._fail(exc, "list")

    def list_pages(self, start_after: str | None = None) -> Iterator[list[ObjectInfo]]:
        return self.list_pages_under(self.prefix, start_after)

    def list_pages_under(
        self, prefix: str, start_after: str | None = None
    ) -> Iterator[list[ObjectInfo]]:
        """Like :meth:`list_pages` for any prefix of the bucket (output stores use it)."""
        paginator = self.client.get_paginator("list_objects_v2")
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = start_after
        pages = paginator.paginate(**kwargs, PaginationConfig={"PageSize": self.page_size})
        try:
            for page in pages:
                yield [
                    ObjectInfo(
                        key=obj["Key"],
                        size=obj["Size"],
                        etag=obj.get("ETag", "").strip('"'),
                        last_modified=_utc(obj["LastModified"]),
                    )
                    for obj in page.get("Contents", ())
                ]
        except (BotoCoreError, ClientError) as exc:
            self._fail(exc, "list")

    # -- listings by key range and by folder (sync/parallel.py) ------------------------------

    def list_range(
        self, prefix: str, after: str | None, upto: str | None
    ) -> Iterator[list[ObjectInfo]]:
        """The keys under ``prefix`` with ``after < key <= upto`` (None: no bound), page by
        page in key order. The last page is cut at ``upto``."""
        for page in self.list_pages_under(prefix, after):
            if upto is not None and page and page[-1].key > upto:
                yield [o for o in page if o.key <= upto]
                return
            yield page

    def list_folders(self, prefix: str, max_pages: int) -> list[str]:
        """The sub-folders (common prefixes ending in ``/``) of ``prefix``, in key order,
        from at most ``max_pages`` delimiter listing pages (the first ones)."""
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter="/", PaginationConfig={"PageSize": 1000}
        )
        folders: list[str] = []
        try:
            for page in itertools.islice(pages, max_pages):
                folders += [p["Prefix"] for p in page.get("CommonPrefixes", ())]
        except (BotoCoreError, ClientError) as exc:
            self._fail(exc, "list")
        return folders

    def head(self, key: str) -> ObjectInfo:
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            self._fail(exc, "read", key)
        return ObjectInfo(
            key=key,
            size=resp["ContentLength"],
            etag=resp.get("ETag", "").strip('"'),
            last_modified=resp["LastModified"].astimezone(UTC),
        )

    def read_range(self, key: str, start: int, length: int, etag: str | None = None) -> bytes:
        if length <= 0:
            return b""
        # If-Match: each range comes from the version the catalog knows, or not at all.
        match = {"IfMatch": f'"{etag}"'} if etag else {}
        try:
            resp = self.client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}", **match
            )
            return bytes(resp["Body"].read())
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code == "InvalidRange":
                return b""
            if code in {"PreconditionFailed", "412"}:
                raise TransientProcessingError(
                    f"{self.object_url(key)}: the object changed while it was being read;"
                    " will retry"
                ) from exc
            self._fail(exc, "read", key)
        except BotoCoreError as exc:
            self._fail(exc, "read", key)

    def download(self, key: str, dest: Path) -> None:
        tmp = dest.with_name(dest.name + ".part")
        try:
            self.client.download_file(self.bucket, key, str(tmp))
        except (BotoCoreError, ClientError) as exc:
            tmp.unlink(missing_ok=True)
            self._fail(exc, "download", key)
        os.replace(tmp, dest)

    def put_file(self, key: str, src: Path, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else None
        try:
            # An S3 object appears all at once when its upload completes.
            self.client.upload_file(str(src), self.bucket, key, ExtraArgs=extra)
        except (BotoCoreError, ClientError) as exc:
            self._fail(exc, "write", key)

    def copy(self, src_key: str, dst_key: str) -> None:
        """Server-side copy within the bucket."""
        try:
            self.client.copy({"Bucket": self.bucket, "Key": src_key}, self.bucket, dst_key)
        except (BotoCoreError, ClientError) as exc:
            self._fail(exc, "copy", src_key)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            self._fail(exc, "delete", key)

    def presigned_url(self, key: str, expires: int = 3600) -> str:
        """A time-limited HTTP(S) URL of an object, for tools such as ffmpeg."""
        try:
            return str(
                self.client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires
                )
            )
        except (BotoCoreError, ClientError) as exc:
            self._fail(exc, "sign a URL for", key)
