"""Development and test doubles, never shipped: the local OIDC issuer, the Kheops layer, the
synthetic DICOM cohorts, the demo albums, `./qi2 run`'s launcher, `./qi2 frontend` and
`./qi2 browser-smoke`.

Its own distribution (devkit/pyproject.toml), installed editable next to the app by
`./qi2 setup`; the app's wheel and images hold none of it, and shared, webapp and workers never
import it (an import-linter contract). Only the issuer runs in an image (devkit/Dockerfile).
"""
