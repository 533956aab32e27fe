"""OpenMaaS: a self-hosted model-as-a-service platform."""
