"""Radiomics extraction: DICOM -> image + mask -> preprocessing -> PyRadiomics, and its task."""
