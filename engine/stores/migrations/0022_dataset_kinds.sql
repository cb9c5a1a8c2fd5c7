-- A dataset version's kind (engine/training/dataset_content.py): 'training' examples, as every version stored
-- before kinds existed, or 'golden' cases, which evaluations score and nothing trains on. The same bytes with the
-- same split rule are one version per kind (the kind is also in doc, where records are read from).
ALTER TABLE datasets ADD COLUMN kind text NOT NULL DEFAULT 'training' CHECK (kind IN ('training', 'golden'));
