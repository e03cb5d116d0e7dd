-- Boxes in review (issue 26): a detection task carries the model's boxes and is decided with a box set;
-- labels keep each reviewer's set, the queue keeps the decided one, and labels imported from COCO files
-- join reviewers' as ground truth. Boxes are JSON lists of vision.boxes.Box.as_dict() (relative corners,
-- 0..1); NULL on every classification task and label, as on every row written before this migration.

ALTER TABLE review_tasks
    ADD COLUMN boxes        jsonb,        -- the model's boxes the task opened with (NULL: classification)
    ADD COLUMN final_boxes  jsonb;        -- the decided box set ([] = no defect)

ALTER TABLE review_labels
    ADD COLUMN boxes        jsonb;        -- this reviewer's box set

-- One row per imported COCO file: its id is the sha256 of the file's bytes and the importing key's site
-- scope, so posting the same file again changes nothing.
CREATE TABLE label_imports (
    import_id      text PRIMARY KEY,
    file_sha256    text NOT NULL,
    imported_by    text NOT NULL,               -- API key id
    images         integer NOT NULL,
    annotations    integer NOT NULL,
    matched        integer NOT NULL,            -- images matched to frames (by sha256)
    created_at     timestamptz NOT NULL DEFAULT now()
);

-- The boxes an import gave a frame; keyed by (import, frame), so a retried import writes nothing new.
CREATE TABLE imported_labels (
    import_id      text NOT NULL REFERENCES label_imports (import_id) ON DELETE CASCADE,
    frame_id       text NOT NULL,
    batch_id       text NOT NULL,
    object_key     text NOT NULL,
    camera_id      text NOT NULL,
    site_id        text NOT NULL DEFAULT '',
    label          text NOT NULL,               -- the frame's label: its largest box's class, or 'ok'
    boxes          jsonb NOT NULL,
    imported_at    timestamptz NOT NULL,
    PRIMARY KEY (import_id, frame_id)
);
CREATE INDEX imported_labels_frame ON imported_labels (frame_id, imported_at DESC);

-- The reviewed label of each frame as training snapshots take it, now with its boxes and where it came
-- from: the latest of a decided review (frames marked unusable left out) and an imported label.
CREATE OR REPLACE VIEW reviewed_frame_labels AS
SELECT DISTINCT ON (l.frame_id)
       l.frame_id, l.batch_id, l.object_key, l.camera_id, l.site_id, l.label, l.predicted_label,
       l.model_confidence, l.model_version, l.corrected, l.decided_at, l.review_id, l.boxes, l.source
  FROM (
        SELECT t.frame_id, t.batch_id, t.object_key, t.camera_id, t.site_id, t.final_label AS label,
               t.predicted_label, t.confidence AS model_confidence, t.model_version, t.corrected, t.decided_at,
               t.review_id, t.final_boxes AS boxes, 'review'::text AS source
          FROM review_tasks t
         WHERE t.status = 'decided' AND t.final_label IS NOT NULL AND t.final_label <> 'unusable'
        UNION ALL
        SELECT i.frame_id, i.batch_id, i.object_key, i.camera_id, i.site_id, i.label,
               NULL::text, NULL::double precision, NULL::text, NULL::boolean, i.imported_at,
               'import-' || i.import_id, i.boxes, 'import'::text
          FROM imported_labels i
       ) l
 ORDER BY l.frame_id, l.decided_at DESC;
