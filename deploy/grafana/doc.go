// Package grafana holds the gateway's Grafana dashboard,
// outflow-dashboard.json (see README.md for importing it). The package has
// no code: its test keeps the dashboard's PromQL in step with the metrics
// the gateway registers, so a renamed or removed metric fails the build
// instead of leaving an empty panel.
package grafana
