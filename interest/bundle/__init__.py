"""Model bundles on disk: the format of both kinds (``format``), reading and writing (``io``), the
cross-process lock and atomic version switch (``storage``) and bounded readers for every part (``safe_io``).

Imports only the core modules and the estimators; it hands back fitted parts and model.json, never a model.
"""
