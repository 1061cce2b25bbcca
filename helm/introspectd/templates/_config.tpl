{{/*
The whole config.toml, rendered from the config sections of the values. The ConfigMap
holds it and the pod template carries its checksum, so a change rolls the pods.
*/}}
{{- define "introspectd.configToml" -}}
{{- $v := .Values -}}
# Rendered by the introspectd Helm chart from its values; edit the values, not this file.
# Any key can be overridden with INTROSPECTD_<SECTION>__<KEY> environment variables.

[server]
grpc_addr = {{ printf "%s:%d" $v.bindAddress (int $v.containerPorts.grpc) | toJson }}
http_addr = {{ printf "%s:%d" $v.bindAddress (int $v.containerPorts.http) | toJson }}
{{- include "introspectd.tomlTable" (dict "table" $v.server) }}

[log]
{{- include "introspectd.tomlTable" (dict "table" $v.log) }}

[cache]
{{- include "introspectd.tomlTable" (dict "table" $v.cache) }}

[auth]
{{- if $v.auth.apiKeysSecret.name }}
api_keys_file = {{ printf "%s/api-keys.toml" (include "introspectd.secretsDir" .) | toJson }}
{{- end }}
{{- $auth := omit $v.auth "apiKeysSecret" }}
{{- if not $v.auth.clients }}
{{- $auth = omit $auth "clients" }}
{{- end }}
{{- include "introspectd.tomlTable" (dict "table" $auth) }}

[store]
{{- if eq $v.store.backend "embedded" }}
path = {{ printf "%s/state.redb" (include "introspectd.dataDir" .) | toJson }}
{{- end }}
{{- include "introspectd.tomlTable" (dict "table" (omit $v.store "redisUrlSecret")) }}
{{- if eq $v.store.backend "redis" }}
# redis_url comes from the INTROSPECTD_STORE__REDIS_URL environment variable (a Secret).
{{- end }}

{{- if $v.tls.enabled }}

[tls]
cert_file = {{ printf "%s/tls.crt" (include "introspectd.tlsDir" .) | toJson }}
key_file = {{ printf "%s/tls.key" (include "introspectd.tlsDir" .) | toJson }}
{{- if $v.tls.clientAuth }}
client_ca_file = {{ printf "%s/ca.crt" (ternary (include "introspectd.clientCaDir" .) (include "introspectd.tlsDir" .) (not (empty $v.tls.clientCa.secretName))) | toJson }}
{{- end }}
reload_interval_secs = {{ int $v.tls.reloadIntervalSeconds }}
{{- end }}

[telemetry]
{{- include "introspectd.tomlTable" (dict "table" $v.telemetry "floatKeys" (list "sample_ratio")) }}
{{- range $issuer := $v.issuers }}

[[issuers]]
{{- include "introspectd.tomlTable" (dict "table" $issuer) }}
{{- end }}
{{- end }}
