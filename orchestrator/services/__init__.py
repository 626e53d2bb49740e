"""Use cases. Each public function owns its transaction, checks permissions
(through :mod:`orchestrator.domain.policy`) before it changes anything, and
writes the audit log in the same transaction as the change."""
