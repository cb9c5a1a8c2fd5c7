-- Durable jobs: a worker claims a job with a lease whose token fences every write it makes (a worker that
-- lost the job to another cannot write), and clients ask the worker holding a job to cancel or pause it.
ALTER TABLE jobs
    ADD COLUMN priority     integer NOT NULL DEFAULT 0,
    ADD COLUMN lease_owner  text,
    ADD COLUMN lease_token  text,
    ADD COLUMN requested    text CHECK (requested IN ('CANCEL', 'PAUSE'));
