"""omgm: Orchestrate Multiple Granularities and Modalities for efficient multimodal retrieval (ACL 2025)."""
__version__ = "0.1.0"
