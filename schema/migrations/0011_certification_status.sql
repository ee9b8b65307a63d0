-- A certification's state (issue 14): the regulator suspends (暂停) or revokes (撤销) a certification, or lifts a
-- suspension. Only those decisions are stored; `expired` is derived from valid_to on the day it is asked
-- (resolver.api.catalog.certification_status), so that a certification expires at midnight without a job that
-- flips rows, and a renewal (a later valid_to) needs no second write. Existing rows are valid: those whose
-- valid_to has passed read as expired.
--
-- Only a valid certification in force counts: the hooks, the consumer documents and GS1 links filter on
-- status = 'valid' AND valid_to >= today. An UPDATE of a row fires certifications_documents_changed
-- (0007_documents), so a suspension reaches every cached document of the producer within a second.
ALTER TABLE certifications
    ADD COLUMN status text NOT NULL DEFAULT 'valid' CHECK (status IN ('valid', 'suspended', 'revoked')),
    ADD COLUMN status_reason text CHECK (length(status_reason) <= 500),
    ADD COLUMN status_changed_at timestamptz;
