{{/*
Chart name, truncated to a DNS label.
*/}}
{{- define "introspectd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full resource name: <release>-<chart>, or the release name when it already contains
the chart name.
*/}}
{{- define "introspectd.fullname" -}}
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

{{- define "introspectd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "introspectd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "introspectd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "introspectd.labels" -}}
helm.sh/chart: {{ include "introspectd.chart" . }}
{{ include "introspectd.selectorLabels" . }}
app.kubernetes.io/version: {{ include "introspectd.imageTag" . | quote }}
app.kubernetes.io/component: token-introspection
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Seconds of the preStop sleep the pod gets: 0 when lifecycle replaces it.
*/}}
{{- define "introspectd.preStopSleepSeconds" -}}
{{- if .Values.lifecycle }}0{{ else }}{{ int .Values.preStopSleepSeconds }}{{ end }}
{{- end }}

{{/*
An object's metadata `annotations:` block, indented for metadata and starting with its
own newline: its own (dict "root" $ "own" ...) over commonAnnotations; nothing when
both are empty.
*/}}
{{- define "introspectd.annotations" -}}
{{- $all := merge (deepCopy (.own | default dict)) (deepCopy (.root.Values.commonAnnotations | default dict)) }}
{{- with $all }}
  annotations:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}

{{- define "introspectd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "introspectd.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "introspectd.imageTag" -}}
{{- .Values.image.tag | default .Chart.AppVersion | toString }}
{{- end }}

{{- define "introspectd.image" -}}
{{- $registry := default .Values.image.registry ((.Values.global | default dict).imageRegistry) }}
{{- $name := ternary (printf "%s/%s" $registry .Values.image.repository) .Values.image.repository (ne $registry "") }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $name .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $name (include "introspectd.imageTag" .) }}
{{- end }}
{{- end }}

{{- define "introspectd.pvcName" -}}
{{- default (printf "%s-data" (include "introspectd.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/*
Fixed paths inside the container. The Rust side reads these through config.toml.
*/}}
{{- define "introspectd.configDir" -}}/etc/introspectd{{- end }}
{{- define "introspectd.secretsDir" -}}/etc/introspectd/secrets{{- end }}
{{- define "introspectd.dataDir" -}}/var/lib/introspectd{{- end }}

{{/*
True ("true") when the data directory lives on a PersistentVolumeClaim.
*/}}
{{- define "introspectd.usesPVC" -}}
{{- if and (eq .Values.store.backend "embedded") .Values.persistence.enabled }}true{{- end }}
{{- end }}

{{/*
True ("true") when more than one pod may run at a time.
*/}}
{{- define "introspectd.multiReplica" -}}
{{- if or .Values.autoscaling.enabled (gt (int .Values.replicaCount) 1) }}true{{- end }}
{{- end }}

{{/*
Refuse combinations that would deploy something broken. Included by validate.yaml
alone, so `helm template` and `helm install` stop with the message and point there.
*/}}
{{- define "introspectd.validate" -}}
{{- $backend := .Values.store.backend }}
{{- if eq $backend "embedded" }}
{{- if gt (int .Values.replicaCount) 1 }}
{{- fail (printf "store.backend=embedded supports exactly one replica (the redb file under %s can only be opened by one pod), but replicaCount is %d: set replicaCount to 1, or use store.backend=redis to run several replicas" (include "introspectd.dataDir" .) (int .Values.replicaCount)) }}
{{- end }}
{{- if .Values.autoscaling.enabled }}
{{- fail "store.backend=embedded supports exactly one replica, so autoscaling.enabled must be false: use store.backend=redis to autoscale" }}
{{- end }}
{{- end }}
{{- if and (eq $backend "redis") (not .Values.store.redisUrlSecret.name) }}
{{- fail "store.backend=redis needs the Redis URL from an existing Secret: set store.redisUrlSecret.name (and store.redisUrlSecret.key, default redis-url); it is passed as INTROSPECTD_STORE__REDIS_URL" }}
{{- end }}
{{- if and (eq $backend "redis") (not .Values.store.redisUrlSecret.key) }}
{{- fail "store.redisUrlSecret.key must name the key of the Secret that holds the Redis URL" }}
{{- end }}
{{- if and .Values.auth.apiKeysSecret.name (not .Values.auth.apiKeysSecret.key) }}
{{- fail "auth.apiKeysSecret.key must name the key of the Secret that holds the API keys file" }}
{{- end }}
{{- $preStopSleep := int (include "introspectd.preStopSleepSeconds" .) }}
{{- if le (int .Values.terminationGracePeriodSeconds) (add $preStopSleep (int .Values.server.shutdown_grace_secs)) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than preStopSleepSeconds (%d) plus server.shutdown_grace_secs (%d), or Kubernetes kills the pod before in-flight calls finish" (int .Values.terminationGracePeriodSeconds) $preStopSleep (int .Values.server.shutdown_grace_secs)) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail "autoscaling.minReplicas must not be greater than autoscaling.maxReplicas" }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- if not (or .Values.tls.secretName .Values.tls.certManager.enabled) }}
{{- fail "tls.enabled needs a certificate: set tls.secretName to an existing kubernetes.io/tls Secret (tls.crt, tls.key), or tls.certManager.enabled=true with tls.certManager.issuerRef.name" }}
{{- end }}
{{- if and .Values.tls.certManager.enabled (not .Values.tls.certManager.issuerRef.name) }}
{{- fail "tls.certManager.enabled needs tls.certManager.issuerRef.name: the cert-manager Issuer or ClusterIssuer that signs the certificate" }}
{{- end }}
{{- end }}
{{- if and .Values.tls.clientAuth (not .Values.tls.enabled) }}
{{- fail "tls.clientAuth (mTLS) needs tls.enabled=true" }}
{{- end }}
{{- if and .Values.auth.clients (not .Values.tls.clientAuth) }}
{{- fail "auth.clients map client certificates to roles, so they need tls.enabled=true and tls.clientAuth=true" }}
{{- end }}
{{- /* Last, so a values file that is wrong in several ways hears of the rest first. */}}
{{- if not .Values.issuers }}
{{- fail "issuers is empty: introspectd refuses to start without a trusted issuer. Add one under issuers (issuer, audiences, and discovery: true or jwks_uri); see examples/embedded.yaml" }}
{{- end }}
{{- end }}

{{/*
TOML rendering.

"introspectd.tomlValue" renders one value: strings through toJson (a JSON string is
a valid TOML basic string), booleans and numbers bare, lists as TOML arrays and maps
as TOML inline tables, recursively. Helm reads every number as a float, so a whole
number prints without a fraction unless the caller asks for a float
(dict "value" v "float" true), which prints 1.0 instead of 1.
*/}}
{{- define "introspectd.tomlValue" -}}
{{- $v := .value }}
{{- if kindIs "string" $v }}
{{- toJson $v }}
{{- else if kindIs "bool" $v }}
{{- ternary "true" "false" $v }}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) }}
{{- if and .float (eq (floor $v) (float64 $v)) }}
{{- printf "%.1f" (float64 $v) }}
{{- else }}
{{- toJson $v }}
{{- end }}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) }}
{{- if .float }}{{ printf "%d.0" $v }}{{ else }}{{ toJson $v }}{{ end }}
{{- else if kindIs "slice" $v }}
{{- $items := list }}
{{- range $item := $v }}
{{- $items = append $items (include "introspectd.tomlValue" (dict "value" $item "key" $.key)) }}
{{- end }}
{{- printf "[%s]" (join ", " $items) }}
{{- else if kindIs "map" $v }}
{{- $pairs := list }}
{{- range $k, $item := $v }}
{{- if not (kindIs "invalid" $item) }}
{{- $pairs = append $pairs (printf "%s = %s" (include "introspectd.tomlKey" $k) (include "introspectd.tomlValue" (dict "value" $item "key" $k))) }}
{{- end }}
{{- end }}
{{- if $pairs }}{{ printf "{ %s }" (join ", " $pairs) }}{{ else }}{}{{ end }}
{{- else if kindIs "invalid" $v }}
{{- fail (printf "config value %q is null inside a list: TOML has no null" .key) }}
{{- else }}
{{- fail (printf "config value %q has a type (%s) that cannot be written to TOML" .key (kindOf $v)) }}
{{- end }}
{{- end }}

{{/*
A TOML key: bare when it only has A-Za-z0-9_- characters, quoted otherwise.
*/}}
{{- define "introspectd.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/*
Render a map as `key = value` lines, sorted by key. Null values and empty strings
are left out, so the service's default applies to them. Keys named in "floatKeys"
are written as TOML floats.
Usage: include "introspectd.tomlTable" (dict "table" $map "floatKeys" (list "sample_ratio"))
*/}}
{{- define "introspectd.tomlTable" -}}
{{- $floatKeys := .floatKeys | default list }}
{{- range $k, $v := .table }}
{{- if not (or (kindIs "invalid" $v) (and (kindIs "string" $v) (eq $v ""))) }}
{{ include "introspectd.tomlKey" $k }} = {{ include "introspectd.tomlValue" (dict "value" $v "key" $k "float" (has $k $floatKeys)) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
TLS: where the certificate Secret is mounted, and its name (the cert-manager
Certificate's Secret when the chart creates one).
*/}}
{{- define "introspectd.tlsDir" -}}
/etc/introspectd/tls
{{- end }}

{{- define "introspectd.clientCaDir" -}}
/etc/introspectd/client-ca
{{- end }}

{{- define "introspectd.tlsSecretName" -}}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "introspectd.fullname" .)) }}
{{- end }}

{{/*
A probe's target: the gRPC health service on plaintext, or an HTTPS GET when TLS is on
(the kubelet's gRPC probes do not speak TLS; its HTTPS probes skip verification and
present no client certificate, which introspectd's optional mTLS lets through to the
unauthenticated /readyz and /healthz).
*/}}
{{- define "introspectd.probeTarget" -}}
{{- if .root.Values.tls.enabled -}}
httpGet:
  path: {{ .path }}
  port: http
  scheme: HTTPS
{{- else -}}
grpc:
  port: {{ int .root.Values.containerPorts.grpc }}
  service: {{ .grpcService | toJson }}
{{- end }}
{{- end }}
