{{/* Names, labels and the values derived from several others. */}}

{{- define "opsync.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "opsync.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "opsync.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "opsync.selectorLabels" -}}
app.kubernetes.io/name: {{ include "opsync.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "opsync.labels" -}}
helm.sh/chart: {{ include "opsync.chart" . }}
{{ include "opsync.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "opsync.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "opsync.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "opsync.image" -}}
{{- $repository := .Values.operator.imageRepository }}
{{- if .Values.operator.imageDigest }}
{{- printf "%s@%s" $repository .Values.operator.imageDigest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.operator.version) }}
{{- end }}
{{- end }}

{{- define "opsync.leaseName" -}}
{{- default (printf "%s-leader" (include "opsync.fullname" .)) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{/* The watched namespaces, without duplicates, in the order given. */}}
{{- define "opsync.watchNamespaces" -}}
{{- uniq .Values.operator.watchNamespace | join "," }}
{{- end }}

{{/* OP_CONNECT_HOST: the sidecar Connect server; a URL as given; host:port or a bare host
(the official chart's form) over http, on port 8080 when none is given. */}}
{{- define "opsync.connectHost" -}}
{{- if .Values.connectServer.enabled }}
{{- printf "http://127.0.0.1:%d" (int .Values.connectServer.port) }}
{{- else if contains "://" .Values.connect.host }}
{{- .Values.connect.host }}
{{- else if contains ":" .Values.connect.host }}
{{- printf "http://%s" .Values.connect.host }}
{{- else }}
{{- printf "http://%s:8080" .Values.connect.host }}
{{- end }}
{{- end }}

{{- define "opsync.connectDataSecret" -}}
{{- default (printf "%s-connect-data" (include "opsync.fullname" .)) .Values.connectServer.existingSecret }}
{{- end }}

{{/*
The rules opsync needs in every namespace it watches: exactly the verbs its code (and kopf's
watches on its behalf) uses. The same list goes into the ClusterRole (every namespace) or into
one Role per watched namespace. Nothing here is a wildcard; pods, namespaces and every other
kind are left out.
*/}}
{{- define "opsync.namespacedRules" -}}
# OnePasswordItems. list, watch: kopf's watch. patch: kopf's finalizer
# (onepassword.com/finalizer.secret) and its progress annotations (opsync.io/*). get: opsync
# reads an item back after repairing its Secret, to re-sync it if it was not Ready.
- apiGroups: ["onepassword.com"]
  resources: ["onepassworditems"]
  verbs: ["get", "list", "watch", "patch"]
# The status subresource: the Ready condition, itemPath, itemVersion, lastSyncTime.
- apiGroups: ["onepassword.com"]
  resources: ["onepassworditems/status"]
  verbs: ["patch"]
# Secrets, the synced ones. list, watch: kopf's watch of the Secrets labelled
# opsync.io/managed=true (drift repair; RBAC cannot restrict by label). get: read before any
# write. create; update: replace guarded by the resourceVersion read; patch: ownerReferences of a
# Secret shared by annotated Deployments; delete: with its OnePasswordItem or Deployment (uid
# precondition). Secrets opsync does not own are never written (SecretConflict).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Events opsync posts on items and workloads (SecretSynced, DriftRepaired, RolloutRestarted, the
# failure reasons). patch: the same Event again raises its count instead of adding one. kopf's own
# event posting is off.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# Deployments. list, watch: kopf's watch for the annotation mode (operator.1password.io/item-path)
# and the search for the users of a changed Secret. patch: kopf's finalizer and annotations on
# annotated Deployments, and rollout restarts (pod template annotations only).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "patch"]
# StatefulSets and DaemonSets: listed to find the users of a changed Secret, patched to restart them.
- apiGroups: ["apps"]
  resources: ["statefulsets", "daemonsets"]
  verbs: ["list", "patch"]
# Argo Rollouts, the same, when installed (without this rule opsync skips them).
- apiGroups: ["argoproj.io"]
  resources: ["rollouts"]
  verbs: ["list", "patch"]
# OnePasswordConnections (opsync.io/v1alpha1): get, only those an item names (read before each of
# its polls: no list, no watch); the status subresource: Ready, the vaults the token sees,
# lastPollTime. The token Secret it names is read with the Secrets rule above, in its own namespace.
- apiGroups: ["opsync.io"]
  resources: ["onepasswordconnections"]
  verbs: ["get"]
- apiGroups: ["opsync.io"]
  resources: ["onepasswordconnections/status"]
  verbs: ["patch"]
{{- end }}

{{/* The admission policy (admission-policy.yaml): "true" when it is rendered, and its name (the
policy is cluster-scoped: the release namespace is in the name). */}}
{{- define "opsync.admissionPolicy.enabled" -}}
{{- if and .Values.admissionPolicy.enabled (.Capabilities.APIVersions.Has "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy") }}true{{ end }}
{{- end }}

{{- define "opsync.admissionPolicy.name" -}}
{{- printf "%s-%s-workloads" (include "opsync.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{/*
A CEL expression for the admission policy: the names of the fields that differ between two maps.
(list NEW OLD SKIP NAME): the keys k of NEW or OLD for which SKIP is false and that are missing
from the other or hold another value there, each named by NAME (an expression of k).
*/}}
{{- define "opsync.admissionPolicy.changed" -}}
{{- $new := index . 0 }}{{ $old := index . 1 }}{{ $skip := index . 2 }}{{ $name := index . 3 -}}
{{ $new }}.filter(k, !({{ $skip }}) && !(k in {{ $old }} && {{ $new }}[k] == {{ $old }}[k])).map(k, {{ $name }}) + {{ $old }}.filter(k, !({{ $skip }}) && !(k in {{ $new }})).map(k, {{ $name }})
{{- end }}
