"""Live code: applications report what they map; the guard reads it back.

App side: :mod:`.reporter` (LiveReporter), :mod:`.readiness` (schema_ready),
:mod:`.usage` (what a MetaData maps). DB side: :mod:`.registry` (instances by the
database clock) and :mod:`.guard_check` (the seam contract runners call).

Nothing is imported here so that ``import expandcontract.live.usage`` stays cheap.
"""
