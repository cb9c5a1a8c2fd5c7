-- What each running queue worker takes (engine.stores.job_queue.ProcrastinateQueue.waiting_reason): its queues and
-- how many items it runs at once, one row per procrastinate worker registration. procrastinate's own table of
-- workers records only their heartbeats; a worker's row goes with its registration (unregistered as it stops, or
-- pruned once its heartbeats stopped), so the live rows are those whose worker still sends heartbeats. A job
-- created while no live worker takes its queue is told so (a NO_WORKER warning) instead of waiting with no word.
CREATE TABLE queue_places (
    worker_id bigint PRIMARY KEY REFERENCES procrastinate_workers (id) ON DELETE CASCADE,
    name text NOT NULL,
    queues text[] NOT NULL,
    places integer NOT NULL CHECK (places > 0)
);
