"""Prometheus metrics of the worker process: what its activities did, and the vision signals of what they
saw, labelled by site, camera (capped: infra.metric_labels) and model version, never by frame or batch.
workers.telemetry serves REGISTRY on settings.worker_metrics_port.

Observed once per chunk with the chunk's totals (and numpy over its confidences), never with a Python
call per frame: the durable path's CPU per frame is budgeted."""

from __future__ import annotations

from collections import Counter as Tally

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from infra.metric_labels import CAMERAS, BulkHistogram, reason_kind
from serving.schema import ClassifyResponse

REGISTRY = CollectorRegistry()
_CAMERA = ["site", "camera"]
_VERSIONED = ["site", "camera", "model_version"]

CLASSIFY_SECONDS = Histogram(
    "sightline_classify_chunk_seconds", "one classify activity's chunk: serving call and records",
    ["site"], registry=REGISTRY, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
FRAMES_CLASSIFIED = Counter("sightline_frames_classified_total", "frames classified", _VERSIONED, registry=REGISTRY)
FRAMES_REJECTED = Counter("sightline_frames_rejected_total", "frames rejected, by kind of reason",
                          [*_CAMERA, "reason"], registry=REGISTRY)
PREDICTIONS = Counter("sightline_predictions_total", "predictions by class", [*_VERSIONED, "label"], registry=REGISTRY)
UNFAMILIAR = Counter("sightline_unfamiliar_frames_total", "frames past the model's novelty threshold",
                     _VERSIONED, registry=REGISTRY)
LOW_CONFIDENCE = Counter("sightline_low_confidence_frames_total", "frames below the review confidence threshold",
                         _VERSIONED, registry=REGISTRY)
CONFIDENCE = BulkHistogram("sightline_prediction_confidence", "the model's confidence in its label", _VERSIONED,
                           (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99), REGISTRY)
IMAGE_QUALITY = Gauge("sightline_image_quality", "mean image-quality feature of a camera's last classified chunk",
                      [*_CAMERA, "feature"], registry=REGISTRY)
REVIEWS_OPENED = Counter("sightline_reviews_opened_total", "review tasks opened, by reason",
                         [*_CAMERA, "reason"], registry=REGISTRY)
ALERTS_SENT = Counter("sightline_alerts_sent_total", "defect alerts started (one signed webhook per batch)",
                      _CAMERA, registry=REGISTRY)
REVIEW_DECISIONS = Counter("sightline_review_decisions_total", "review tasks decided: the reviewer confirmed or "
                           "corrected the model", [*_VERSIONED, "outcome"], registry=REGISTRY)
REVIEW_LATENCY = Histogram("sightline_review_time_to_decision_seconds", "from a review task's opening to its decision",
                           _CAMERA, registry=REGISTRY,
                           buckets=(10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 14400, 86400))
DRIFT_SCORE = Gauge("sightline_drift_score", "per-column drift score of the site's last drift check",
                    ["site", "model_version", "column"], registry=REGISTRY)
DRIFT_SHARE = Gauge("sightline_drift_share", "share of drifted columns in the site's last drift check",
                    ["site", "model_version"], registry=REGISTRY)
RETRAINING_EPOCHS = Counter("sightline_retraining_epochs_total", "training epochs completed", registry=REGISTRY)

# The kinds of rejection (serving.preprocessor and vision.decode word them so).
REJECTION_KINDS = ("image too large", "image too small", "unsupported image format", "animated image",
                   "not an image", "corrupt image", "empty file", "invalid object key",
                   "frame not found in the object store")
# The quality features that tell a camera's health (vision.quality; "noise" where it is computed).
QUALITY_FEATURES = ("brightness", "contrast", "sharpness", "saturation", "noise")


def record_classified(site_id: str, camera_id: str, response: ClassifyResponse, review_below: float,
                      elapsed_s: float) -> None:
    """One chunk's counts and vision signals."""
    site, camera = CAMERAS(site_id, camera_id)
    CLASSIFY_SECONDS.labels(site).observe(elapsed_s)
    for reason, n in Tally(reason_kind(r.reason, REJECTION_KINDS) for r in response.rejections).items():
        FRAMES_REJECTED.labels(site, camera, reason).inc(n)
    preds = response.predictions
    if not preds:
        return
    by_version: dict[str, list[int]] = {}
    for i, p in enumerate(preds):
        by_version.setdefault(p.model_version or response.model_version, []).append(i)
    confidence = np.fromiter((p.confidence for p in preds), np.float64, len(preds))
    for version, idxs in by_version.items():
        labels = (site, camera, version)
        FRAMES_CLASSIFIED.labels(*labels).inc(len(idxs))
        part = confidence[idxs] if len(by_version) > 1 else confidence
        CONFIDENCE.observe_many(labels, part)
        LOW_CONFIDENCE.labels(*labels).inc(int((part < review_below).sum()))
        UNFAMILIAR.labels(*labels).inc(sum(1 for i in idxs if preds[i].unfamiliar))
        for label, n in Tally(preds[i].label for i in idxs).items():
            PREDICTIONS.labels(*labels, label).inc(n)
    features = [f for f in QUALITY_FEATURES if f in preds[0].quality]
    if features:
        table = np.array([[p.quality.get(f, np.nan) for f in features] for p in preds], np.float64)
        for feature, mean in zip(features, np.nanmean(table, axis=0).tolist(), strict=True):
            IMAGE_QUALITY.labels(site, camera, feature).set(mean)


def record_reviews_opened(site_id: str, camera_id: str, reasons: list[str], alert: bool) -> None:
    site, camera = CAMERAS(site_id, camera_id)
    for reason, n in Tally(reasons).items():
        REVIEWS_OPENED.labels(site, camera, reason).inc(n)
    if alert:
        ALERTS_SENT.labels(site, camera).inc()


def record_review_decided(site_id: str, camera_id: str, model_version: str | None, corrected: bool,
                          latency_s: float | None) -> None:
    site, camera = CAMERAS(site_id, camera_id)
    REVIEW_DECISIONS.labels(site, camera, model_version or "", "corrected" if corrected else "confirmed").inc()
    if latency_s is not None and latency_s >= 0:
        REVIEW_LATENCY.labels(site, camera).observe(latency_s)


def record_drift(site_id: str, model_version: str | None, scores: dict[str, float | None],
                 drift_share: float | None) -> None:
    for column, score in scores.items():
        if score is not None:
            DRIFT_SCORE.labels(site_id, model_version or "", column).set(score)
    if drift_share is not None:
        DRIFT_SHARE.labels(site_id, model_version or "").set(drift_share)
