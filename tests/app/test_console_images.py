"""GET /v1/fingerprints/images/{name}: thumbnails of the fingerprint image set (the console's grids)."""

from __future__ import annotations

import io

from PIL import Image

from tests.conftest import write_random_pngs


def test_thumbnail_etag_and_every_refusal(make_client, tmp_path):
    images = write_random_pngs(tmp_path / "images", 2, size=(300, 200))
    (images / "bad.png").write_bytes(b"not an image at all")
    (images / ".hidden.png").write_bytes((images / "img0.png").read_bytes())
    (images / "notes.txt").write_text("hello")
    outside = write_random_pngs(tmp_path / "elsewhere", 1)
    (images / "link.png").symlink_to(outside / "img0.png")
    with make_client(images_dir=images) as client:
        resp = client.get("/v1/fingerprints/images/img0.png", params={"size": 64})
        assert resp.status_code == 200 and resp.headers["content-type"] == "image/jpeg"
        thumb = Image.open(io.BytesIO(resp.content))
        assert thumb.format == "JPEG" and max(thumb.size) == 64 and thumb.size == (64, 43)  # aspect kept
        etag = resp.headers["etag"]
        again = client.get("/v1/fingerprints/images/img0.png", params={"size": 64}, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
        other = client.get("/v1/fingerprints/images/img0.png")  # default size 256: another thumbnail, another tag
        assert other.status_code == 200 and other.headers["etag"] != etag and max(Image.open(io.BytesIO(other.content)).size) == 256
        small = client.get("/v1/fingerprints/images/img1.png", params={"size": 1024})
        assert max(Image.open(io.BytesIO(small.content)).size) == 300  # never enlarged
        for name in ("nope.png", ".hidden.png", "notes.txt", "link.png", "...png", "img0.png.txt"):
            r = client.get(f"/v1/fingerprints/images/{name}")
            assert r.status_code == 404, name
            assert r.json()["error"]["code"] in ("image_not_found", "not_found"), name
        assert client.get("/v1/fingerprints/images/..%2Fimages%2Fimg0.png").status_code == 404
        bad = client.get("/v1/fingerprints/images/bad.png")
        assert bad.status_code == 415 and bad.json()["error"]["code"] == "unsupported_media_type"
        for size in (0, 15, 1025, "big"):
            assert client.get("/v1/fingerprints/images/img0.png", params={"size": size}).status_code == 422


def test_no_image_folder_is_a_503_naming_the_setting(make_client):
    with make_client() as client:
        resp = client.get("/v1/fingerprints/images/img0.png")
        assert resp.status_code == 503
        assert resp.json()["error"]["detail"]["setting"] == "VISLEX_IMAGES_DIR"
        assert resp.headers["retry-after"] == "1"
