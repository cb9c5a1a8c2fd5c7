-- Versions a LoraControl operation replaced that stay loaded until their retirement is due: every serving process
-- of the target routed the alias to them until its next follow, and the requests it sent them are given the drain
-- timeout to end. Written by the operation (under the target's lock): a version retired again gets the later due
-- time. A process still streaming from one pushes due_time forward; whichever serving process of the target finds
-- one due in its follow unloads it (unless the state needs it again) and deletes the row. Reconciliations keep the
-- versions whose retirement is not due yet loaded. Rows survive the process that wrote them stopping.
CREATE TABLE lora_retirements (
    target    text NOT NULL,
    version   text NOT NULL,
    due_time  timestamptz NOT NULL,
    PRIMARY KEY (target, version)
);
