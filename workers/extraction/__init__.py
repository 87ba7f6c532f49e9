"""Radiomics extraction: DICOM -> image + mask -> preprocessing -> PyRadiomics (pure), and its task."""
