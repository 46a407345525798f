"""The feature registry as YAML: loading, validation, compilation, snapshots, plans, apply.

- ``compiler.load_registry(root) -> Registry`` (raises ``errors.RegistryInvalid``, every error
  as ``file:line:column: message``); ``compiler.check_registry`` returns the errors instead.
- ``snapshot.registry_to_json`` / ``registry_from_json``: deterministic JSON, and fingerprints.
- ``plan.plan_registry(old, new) -> Plan``: added/changed/removed, breaking or not, and why.
- ``apply.apply_registry`` / ``rollback_registry``: the use cases over a ``RegistryStore`` and
  a list of ``ApplyTarget`` side effects.
- ``stores.open_registry_store(url)``: ``file:PATH`` here; more schemes can be registered.

Submodules are imported explicitly (no re-exports here) so runtimes that only read snapshots
do not import pydantic or ruamel.yaml.
"""
