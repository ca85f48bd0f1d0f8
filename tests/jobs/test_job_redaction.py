"""ffmpeg reads S3 sources through presigned URLs; when it fails, what it says reaches
the job's error and log without the URL's signature or credential."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import S3Bucket
from mediamirror.errors import ProcessingError
from mediamirror.processing.transcode import make_poster
from mediamirror.sources import add_source, source_store

from .conftest import Lab, MediaKit

pytestmark = pytest.mark.timeout(150)

#: A signature or credential value left in clear (redacted ones read ``=***``), SigV4
#: or SigV2 (what boto3 presigns with for an S3-compatible endpoint).
SIGNED = re.compile(r"(X-Amz-Signature|X-Amz-Credential|Signature|AWSAccessKeyId)=(?!\*\*\*)", re.I)


def test_poster_failing_on_a_presigned_url_leaks_no_signature(
    sqlite_lab: Lab, media: MediaKit, bucket: S3Bucket, tmp_path: Path
) -> None:
    lab = sqlite_lab
    whole = media["h264-faststart"].read_bytes()
    # The index (moov, in front) is whole but the frames are cut off: ffmpeg, reading the
    # presigned URL, opens it and finds no frame to make a poster from (older builds
    # exit 0 and the poster step names the input, newer ones fail with their reason).
    bucket.put("v/clip.mp4", whole[: whole.index(b"mdat") + 64])
    source = add_source(lab.catalog, "src", bucket.url(), env=lab.environ(), **bucket.options)
    url = source_store(source, lab.environ()).media_input("v/clip.mp4")
    assert SIGNED.search(url) and not Path(url).exists()
    with pytest.raises(ProcessingError) as caught:
        make_poster(url, tmp_path / "poster.jpg", 0.5)
    message = str(caught.value)
    assert message.startswith("ffmpeg failed") or "no frame" in message, message
    assert not SIGNED.search(message), message
