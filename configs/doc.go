// Package configs holds the example gateway configs per environment, the
// flag files, the Grafana dashboard (grafana/switchyard.json) and the
// Prometheus alert rules (prometheus/alerts.yml). It has no Go API: its
// tests check that the dashboard and the alert rules only use the metric
// names and labels the gateway's packages register, and that every alert
// links an existing section of docs/runbook.md.
package configs
