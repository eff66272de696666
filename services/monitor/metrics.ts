import { counter, gauge } from "../runtime/observability/metrics.js";

/*
 * The monitor's own metrics: what it ingests, and each model version's last closed window
 * (labels: model, version, and feature where it applies). The alert rules shipped with the
 * Grafana dashboard (monitoring/alerts.yml) read mlmesh_monitor_alerts_firing.
 */

export const recordsIngested = counter({
  name: "mlmesh_monitor_records_total",
  help: "Prediction records received, by outcome: stored, or duplicate (a request id already stored).",
  labelNames: ["outcome"],
});
export const lateRecords = counter({
  name: "mlmesh_monitor_late_records_total",
  help: "Predictor records stored after their window had closed (not counted in drift).",
});
export const windowRequests = gauge({ name: "mlmesh_monitor_window_requests", help: "Predictor records in the model version's last closed window.", labelNames: ["model", "version"] });
export const windowRows = gauge({ name: "mlmesh_monitor_window_rows", help: "Rows in the model version's last closed window.", labelNames: ["model", "version"] });
export const outlierRate = gauge({ name: "mlmesh_monitor_outlier_rate", help: "Share of scored rows flagged as outliers in the last closed window.", labelNames: ["model", "version"] });
export const featurePsi = gauge({ name: "mlmesh_monitor_feature_psi", help: "Population stability index of a feature in the last closed window against the training data.", labelNames: ["model", "version", "feature"] });
export const featureKs = gauge({ name: "mlmesh_monitor_feature_ks", help: "Kolmogorov-Smirnov statistic of a feature in the last closed window against the training data.", labelNames: ["model", "version", "feature"] });
export const featureMeanShift = gauge({
  name: "mlmesh_monitor_feature_mean_shift",
  help: "Shift of a feature's mean in the last closed window, in training standard deviations.",
  labelNames: ["model", "version", "feature"],
});
export const labelShift = gauge({ name: "mlmesh_monitor_label_shift", help: "Largest change of a predicted label's share against the training labels, last closed window.", labelNames: ["model", "version"] });
export const alertsFiring = gauge({ name: "mlmesh_monitor_alerts_firing", help: "Alerts firing now, by model, version and kind (feature_drift, label_drift, outlier_rate).", labelNames: ["model", "version", "kind"] });
