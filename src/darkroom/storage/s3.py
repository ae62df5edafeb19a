"""S3-compatible storage (AWS S3, Cloudflare R2, SeaweedFS, MinIO) through boto3.

boto3 is blocking, so every call runs in a worker thread. The bucket stays private: files are
served by presigned GET URLs, or as ``CDN_URL/key`` when the operator put a public domain in
front of the bucket. Direct uploads get a presigned PUT whose signature covers the content type
and the exact length, so the client can upload only what it announced.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from darkroom.config import Settings
from darkroom.storage.base import ObjectInfo, ObjectNotFound, PresignedPut, StorageError

_MISSING = {"404", "NoSuchKey", "NotFound"}
# Multipart above 8 MiB (S3's minimum part size is 5 MiB), parts sent by up to 4 threads.
_TRANSFER = TransferConfig(multipart_threshold=8 * 2**20, multipart_chunksize=8 * 2**20, max_concurrency=4)


class S3Storage:
    def __init__(
        self,
        *,
        bucket: str,
        access_key_id: str | None,
        secret_access_key: str | None,
        region: str | None,
        endpoint_url: str | None,
        cdn_url: str | None = None,
        name: str = "s3",
        staging_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.staging_dir = staging_dir or Path(tempfile.gettempdir()) / "darkroom-staging"
        self.bucket = bucket
        self.cdn_url = cdn_url.rstrip("/") if cdn_url else None
        config = Config(
            signature_version="s3v4",
            # Path-style for S3-compatible servers on a plain host:port; AWS picks for itself.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        )
        self.client: Any = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
            config=config,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        if settings.storage_provider == "r2":
            if not (settings.r2_bucket_name and settings.r2_endpoint):
                raise ValueError("STORAGE_PROVIDER=r2 needs R2_BUCKET_NAME and R2_ENDPOINT")
            return cls(
                bucket=settings.r2_bucket_name,
                access_key_id=settings.r2_access_key_id,
                secret_access_key=settings.r2_secret_access_key,
                region="auto",
                endpoint_url=settings.r2_endpoint,
                cdn_url=settings.cdn_url,
                name="r2",
                staging_dir=settings.data_dir / "staging",
            )
        if not settings.s3_bucket_name:
            raise ValueError("STORAGE_PROVIDER=s3 needs S3_BUCKET_NAME")
        return cls(
            bucket=settings.s3_bucket_name,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            region=settings.s3_region or "us-east-1",
            endpoint_url=settings.s3_endpoint,
            cdn_url=settings.cdn_url,
            staging_dir=settings.data_dir / "staging",
        )

    async def _call(self, method: str, **kwargs: Any) -> Any:
        try:
            return await asyncio.to_thread(getattr(self.client, method), Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in _MISSING:
                raise ObjectNotFound(kwargs.get("Key", "")) from None
            raise StorageError(f"{self.name} {method} failed: {code or exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"{self.name} {method} failed: {exc}") from exc

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        await self._call("put_object", Key=key, Body=data, ContentType=content_type)

    def _upload(self, path: Path, key: str, content_type: str) -> None:
        try:
            # boto3's managed transfer: one PUT below the threshold, a multipart upload above it
            # (parts read from the file, never the whole file in memory).
            self.client.upload_file(
                str(path), self.bucket, key, ExtraArgs={"ContentType": content_type}, Config=_TRANSFER
            )
        except (S3UploadFailedError, ClientError, BotoCoreError) as exc:
            raise StorageError(f"{self.name} upload of {key} failed: {exc}") from exc
        finally:
            path.unlink(missing_ok=True)

    async def put_file(self, key: str, path: Path, content_type: str) -> None:
        await asyncio.to_thread(self._upload, path, key, content_type)

    async def get(self, key: str) -> bytes:
        response = await self._call("get_object", Key=key)
        body = response["Body"]
        try:
            return bytes(await asyncio.to_thread(body.read))
        finally:
            body.close()

    def local_path(self, key: str) -> Path | None:
        return None  # the objects are on the S3 server

    async def delete(self, key: str) -> None:
        await self._call("delete_object", Key=key)

    async def exists(self, key: str) -> bool:
        return await self.stat(key) is not None

    async def stat(self, key: str) -> ObjectInfo | None:
        try:
            head = await self._call("head_object", Key=key)
        except ObjectNotFound:
            return None
        return ObjectInfo(size=int(head["ContentLength"]), content_type=head.get("ContentType"))

    def url(self, key: str, *, expires_in: int, download_name: str | None = None) -> str:
        if self.cdn_url and not download_name:
            return f"{self.cdn_url}/{quote(key)}"
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if download_name:
            params["ResponseContentDisposition"] = f'attachment; filename="{download_name}"'
        return str(self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_in))

    def presign_put(self, key: str, *, content_type: str, size: int, expires_in: int) -> PresignedPut:
        url = self.client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type, "ContentLength": size},
            ExpiresIn=expires_in,
        )
        return PresignedPut(url=str(url), headers={"Content-Type": content_type})

    async def check(self) -> None:
        await self._call("head_bucket")

    async def list_keys(self, prefix: str, *, start_after: str = "", limit: int = 1000) -> list[str]:
        response = await self._call(
            "list_objects_v2", Prefix=prefix, StartAfter=start_after or prefix, MaxKeys=limit
        )
        return [str(item["Key"]) for item in response.get("Contents", [])]
