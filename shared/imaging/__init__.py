"""Image sources: where DICOM studies come from (Kheops, any DICOMweb server, a local folder)."""
