"""Development and test services: local OIDC issuer, Kheops album layer, the dev platform runner."""
