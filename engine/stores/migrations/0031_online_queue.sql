-- Online sessions have a queue of their own (engine.stores.job_queue.ONLINE_QUEUE), taken by a worker of their own
-- with as many places as sessions run at once, beside the training queue's worker with as many as training and
-- Fisher jobs run (server.engine_wiring.start_job_workers): a session never holds a training job's place, nor a
-- training job a session's. The items of sessions queued before, in the training queue, move to it; those running
-- too, so that one whose worker stops is queued again there (engine.stores.job_queue: a stalled item is queued
-- again in its own queue).
UPDATE procrastinate_jobs SET queue_name = 'learning_engine_online'
    WHERE queue_name = 'learning_engine_jobs' AND task_name = 'learning_engine.run_job'
      AND args ->> 'kind' = 'onlineSession' AND status IN ('todo', 'doing');
