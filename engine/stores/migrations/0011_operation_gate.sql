-- The gate's decision (every suite's verdict) on the LoraControl operation that ran it.
ALTER TABLE lora_operations ADD COLUMN gate jsonb;
