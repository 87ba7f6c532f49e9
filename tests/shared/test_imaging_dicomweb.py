"""The DICOMweb client straight against Orthanc, the albums file, and the multipart reader."""

from __future__ import annotations

import io
import json

import pydicom
import pytest

from shared.config import Settings
from shared.errors import NotFound, ServiceUnavailable
from shared.imaging.dicomweb import (
    DicomWebAlbum,
    DicomWebSource,
    MultipartReader,
    load_albums,
    multipart_boundary,
    parse_albums,
)
from shared.imaging.factory import image_source
from shared.imaging.source import PATIENT_NAME, ROI_NAME, STRUCTURE_SET_ROI_SEQUENCE
from tests.support.fixtures import PRIVATE_PATIENTS, SMALL_PATIENTS


@pytest.fixture
def source(orthanc, sts_studies) -> DicomWebSource:
    albums = {
        "small": DicomWebAlbum("Small", tuple(sts_studies[p] for p in SMALL_PATIENTS)),
        "query": DicomWebAlbum("STS_01x", query={"PatientID": "STS_01*"}),
    }
    return DicomWebSource(orthanc.dicomweb_url, albums, timeout=10, retries=1)


# Against Orthanc -------------------------------------------------------------------------------
def test_album_by_study_list(source, sts_studies):
    assert source.album("small").number_of_studies == 3
    studies = source.list_studies("small")
    assert [s.patient_id for s in studies] == list(SMALL_PATIENTS)  # configured order
    assert studies[0].dicom_json[PATIENT_NAME]["Value"][0] == {"Alphabetic": "STS_002"}
    assert [a.album_id for a in source.list_albums()] == ["query", "small"]


def test_album_by_query(source):
    studies = source.list_studies("query")
    assert sorted(s.patient_id for s in studies) == ["STS_012", "STS_015", "STS_018", "STS_019"]
    assert source.album("query").number_of_studies == 4


def test_series_metadata_and_download(source, sts_studies, tmp_path):
    study = sts_studies["STS_015"]
    contours = source.list_series("query", study, ("RTSTRUCT", "SEG"))
    assert len(contours) == 3
    metadata = source.series_metadata("query", study, contours[0].series_uid)
    names = {i[ROI_NAME]["Value"][0] for i in metadata[0][STRUCTURE_SET_ROI_SEQUENCE]["Value"]}
    assert names <= {"GTV_Mass_CT", "GTV_Mass_PET", "GTV_Mass_MR_T1"} and len(names) == 1
    mr = next(s for s in source.list_series("query", study) if s.modality == "MR")
    files = source.download_series("query", study, mr.series_uid, tmp_path / "mr")
    assert len(files) == mr.number_of_instances
    ds = pydicom.dcmread(files[-1])
    assert str(ds.SeriesInstanceUID) == mr.series_uid and ds.pixel_array.size > 0


def test_studies_outside_the_album_are_not_found(source, sts_studies, tmp_path):
    outsider = sts_studies[PRIVATE_PATIENTS[0]]
    with pytest.raises(NotFound):
        source.list_series("small", outsider)
    with pytest.raises(NotFound):
        source.list_series("query", outsider)
    with pytest.raises(NotFound):
        source.download_series("small", outsider, "1.2.3", tmp_path)
    with pytest.raises(NotFound):
        source.album("nope")


def test_unknown_series_is_not_found(source, sts_studies, tmp_path):
    with pytest.raises(NotFound):
        source.download_series("small", sts_studies["STS_002"], "1.2.3.4", tmp_path / "x")


def test_factory_builds_the_dicomweb_source(orthanc, sts_studies, tmp_path):
    albums_file = tmp_path / "albums.yaml"
    albums_file.write_text(f"demo:\n  name: Demo\n  study_uids: ['{sts_studies['STS_032']}']\n")
    settings = Settings(
        image_source="dicomweb",
        dicomweb_url=orthanc.dicomweb_url,
        dicomweb_albums_file=albums_file,
        http_timeout_seconds=5,
    )
    source = image_source(settings, credential="user-token-not-forwarded")
    assert isinstance(source, DicomWebSource)
    assert "Authorization" not in source.http._headers
    assert [s.patient_id for s in source.list_studies("demo")] == ["STS_032"]
    with pytest.raises(ServiceUnavailable):
        image_source(Settings(image_source="dicomweb"))


# The albums file -------------------------------------------------------------------------------
def test_albums_file_yaml_and_json(tmp_path):
    spec = {"a": {"name": "A", "study_uids": ["1.2.3"]}, "b": {"query": {"00100020": "X*"}}}
    json_file = tmp_path / "albums.json"
    json_file.write_text(json.dumps(spec))
    yaml_file = tmp_path / "albums.yml"
    yaml_file.write_text("a:\n  name: A\n  study_uids: [1.2.3]\nb:\n  query: {'00100020': X*}\n")
    expected = {
        "a": DicomWebAlbum("A", ("1.2.3",)),
        "b": DicomWebAlbum("b", query={"00100020": "X*"}),
    }
    assert load_albums(json_file) == expected
    assert load_albums(yaml_file) == expected


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"a": "x"},
        {"a": {"name": "A"}},
        {"a": {"study_uids": ["1"], "query": {"PatientID": "x"}}},
        {"a": {"query": {"NotAKeyword": "x"}}},
        {"a": {"study_uids": "1.2"}},
        {"a": {"study_uids": [1.2]}},  # what YAML makes of an unquoted two-part "UID"
    ],
)
def test_bad_albums_are_configuration_errors(data):
    with pytest.raises(ServiceUnavailable, match="DICOMweb albums configuration"):
        parse_albums(data)


def test_missing_albums_file(tmp_path):
    with pytest.raises(ServiceUnavailable):
        load_albums(tmp_path / "missing.yaml")


# multipart/related -------------------------------------------------------------------------------
BOUNDARY = b"b0undary-x"


def multipart(parts: list[bytes], *, headers: bool = True) -> bytes:
    """Build a body with a preamble, transport padding and an epilogue."""
    body = b"preamble to ignore\r\n"
    for part in parts:
        body += b"--" + BOUNDARY + b"  \r\n"
        body += b"Content-Type: application/dicom\r\nX-Extra: 1\r\n\r\n" if headers else b"\r\n"
        body += part + b"\r\n"
    return body + b"--" + BOUNDARY + b"--\r\nepilogue"


class Sink(io.BytesIO):
    """Keeps the part's bytes after close()."""

    def __init__(self, store: list[bytes]) -> None:
        super().__init__()
        self.store = store

    def close(self) -> None:
        self.store.append(self.getvalue())
        super().close()


@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 10_000])
@pytest.mark.parametrize("headers", [True, False])
def test_multipart_reader_any_chunking(chunk, headers):
    parts = [b"\x00" * 5 + b"DICM" + b"\r\n--b0und", b"", b"\r\n-" * 40, bytes(range(256)) * 3]
    body = multipart(parts, headers=headers)
    store: list[bytes] = []
    seen: list[dict[str, str]] = []

    def open_part(part_headers: dict[str, str]) -> Sink:
        seen.append(part_headers)
        return Sink(store)

    reader = MultipartReader(BOUNDARY, open_part)
    for start in range(0, len(body), chunk):
        reader.feed(body[start : start + chunk])
    assert reader.finish() == len(parts)
    assert store == parts
    if headers:
        assert seen[0]["content-type"] == "application/dicom"


def test_truncated_multipart_is_an_error():
    body = multipart([b"abc", b"def"])
    store: list[bytes] = []
    reader = MultipartReader(BOUNDARY, lambda _: Sink(store))
    reader.feed(body[:-30])
    with pytest.raises(ValueError, match="closing boundary"):
        reader.finish()


def test_boundary_parsing():
    header = 'multipart/related; type="application/dicom"; boundary="abc:123"'
    assert multipart_boundary(header) == b"abc:123"
    with pytest.raises(ValueError):
        multipart_boundary("application/json")
