-- Detection (issue 26): a model version declares its task, and a detection version's predictions carry
-- the boxes it found in each frame (vision.boxes.Box.as_dict(): relative corners, class, score).
ALTER TABLE model_versions
    ADD COLUMN task text NOT NULL DEFAULT 'classification' CHECK (task IN ('classification', 'detection'));

-- NULL for a classifier's prediction; a list (possibly empty) for a detector's.
ALTER TABLE predictions
    ADD COLUMN boxes jsonb;
ALTER TABLE shadow_predictions
    ADD COLUMN boxes jsonb;
