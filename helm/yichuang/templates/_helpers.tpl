{{/* The chart's name, as overridden. */}}
{{- define "yichuang.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The prefix of every resource name: the release's name, with the chart's unless it holds it. */}}
{{- define "yichuang.fullname" -}}
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

{{/* Labels of every resource but the ones that select: add "yichuang.selectorLabels" to them. */}}
{{- define "yichuang.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: yichuang
{{- end }}

{{/* Labels of a resource that belongs to no one component (ConfigMaps, the ServiceAccount). */}}
{{- define "yichuang.labels" -}}
{{ include "yichuang.commonLabels" . }}
app.kubernetes.io/name: {{ include "yichuang.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "gateway" ["department" "scjg"]). */}}
{{- define "yichuang.selectorLabels" -}}
app.kubernetes.io/name: {{ include "yichuang.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- with .department }}
yichuang/department: {{ . }}
{{- end }}
{{- end }}

{{/* The image of every container. */}}
{{- define "yichuang.image" -}}
{{ printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "yichuang.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "yichuang.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: the existing ServiceAccount to use when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The AMQP URL, with the user and password taken from the environment when the process reads its
configuration (YICHUANG_AMQP_USER, YICHUANG_AMQP_PASSWORD). "/" is the default vhost, "%2f".
*/}}
{{- define "yichuang.amqpUrl" -}}
{{- $r := .Values.rabbitmq -}}
{{- printf "%s://${YICHUANG_AMQP_USER}:${YICHUANG_AMQP_PASSWORD}@%s:%v/%s" ($r.tls.enabled | ternary "amqps" "amqp") (required "rabbitmq.host: the RabbitMQ cluster's AMQP host" $r.host) $r.port (urlquery $r.vhost) }}
{{- end }}

{{/* The [bus] settings shared by the gateway and the adapters: they declare the same queues. */}}
{{- define "yichuang.busSettings" -}}
url = {{ include "yichuang.amqpUrl" . | toJson }}
prefix = {{ .Values.rabbitmq.prefix | toJson }}
delivery_limit = {{ .Values.rabbitmq.deliveryLimit | int }}
retry_delays_secs = [{{ range $i, $d := .Values.rabbitmq.retryDelaysSecs }}{{ if $i }}, {{ end }}{{ $d | int }}{{ end }}]
timeout_secs = {{ .Values.rabbitmq.timeoutSecs | int }}
{{- if and .Values.rabbitmq.tls.enabled .Values.rabbitmq.tls.caSecret }}
ca_file = "${YICHUANG_AMQP_CA}"
{{- end }}
{{- end }}

{{/*
The environment variables holding a RabbitMQ user's name and password, from its Secret:
(dict "secret" "name" "usernameKey" "username" "passwordKey" "password" "what" "rabbitmq.gateway").
*/}}
{{- define "yichuang.amqpEnv" -}}
- name: YICHUANG_AMQP_USER
  valueFrom:
    secretKeyRef:
      name: {{ required (printf "%s.existingSecret: the Secret with this RabbitMQ user's name and password" .what) .secret }}
      key: {{ .usernameKey | default "username" }}
- name: YICHUANG_AMQP_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .passwordKey | default "password" }}
{{- end }}

{{/*
A CA certificate from a Secret, mounted at /etc/yichuang/tls/<dir>/ca.crt:
(dict "name" "postgresql-ca" "secret" "…" "key" "ca.crt"). Volume and mount.
*/}}
{{- define "yichuang.caVolume" -}}
- name: {{ .name }}
  secret:
    secretName: {{ .secret }}
    defaultMode: 0440
    items:
      - key: {{ .key | default "ca.crt" }}
        path: ca.crt
{{- end }}

{{/* The broker's CA, where the bus checks its certificate: env, volume, mount (or nothing). */}}
{{- define "yichuang.amqpCaEnv" -}}
{{- if and .Values.rabbitmq.tls.enabled .Values.rabbitmq.tls.caSecret }}
- name: YICHUANG_AMQP_CA
  value: /etc/yichuang/tls/rabbitmq/ca.crt
{{- end }}
{{- end }}
{{- define "yichuang.amqpCaVolume" -}}
{{- if and .Values.rabbitmq.tls.enabled .Values.rabbitmq.tls.caSecret }}
{{- include "yichuang.caVolume" (dict "name" "rabbitmq-ca" "secret" .Values.rabbitmq.tls.caSecret "key" .Values.rabbitmq.tls.caKey) }}
{{- end }}
{{- end }}
{{- define "yichuang.amqpCaMount" -}}
{{- if and .Values.rabbitmq.tls.enabled .Values.rabbitmq.tls.caSecret }}
- name: rabbitmq-ca
  mountPath: /etc/yichuang/tls/rabbitmq
  readOnly: true
{{- end }}
{{- end }}

{{/* The same as URL parameters, for the demo's 前置库 URLs: ?sslmode=…[&sslrootcert=…]. */}}
{{- define "yichuang.pgUrlTls" -}}
{{- $t := .Values.postgresql.tls -}}
?sslmode={{ $t.sslmode }}{{ if $t.caSecret }}&sslrootcert=/etc/yichuang/tls/postgresql/ca.crt{{ end }}
{{- end }}

{{/* The libpq TLS settings of a PostgreSQL connection string: sslmode and sslrootcert. */}}
{{- define "yichuang.pgTls" -}}
{{- $t := .Values.postgresql.tls -}}
sslmode={{ $t.sslmode }}{{ if $t.caSecret }} sslrootcert=/etc/yichuang/tls/postgresql/ca.crt{{ end }}
{{- end }}

{{/*
What the values may not say, checked once (configmaps.yaml includes it): protections are turned
off only together with the development flag, and what each protection needs is given.
*/}}
{{- define "yichuang.checkTrust" -}}
{{- $v := .Values }}
{{- $dev := $v.development.plaintext }}
{{- if and (not $v.gateway.tls.enabled) (not $dev) }}
{{- fail "gateway.tls.enabled is false: plaintext gRPC exposes applicants' personal data and every caller's identity; only a development cluster may turn TLS off, with development.plaintext: true (docs/security.md)" }}
{{- end }}
{{- if and $v.gateway.tls.enabled (not $v.certManager.enabled) (not $v.gateway.tls.existingSecret) }}
{{- fail "gateway.tls.existingSecret: the kubernetes.io/tls Secret with the gateway's server certificate (or certManager.enabled to have one issued)" }}
{{- end }}
{{- if and $v.gateway.tls.enabled (not $v.gateway.tls.clientCA.existingSecret) (not $v.gateway.auth.jwt.issuer) }}
{{- fail "gateway.tls.clientCA.existingSecret and gateway.auth.jwt.issuer are both empty: no caller could prove who it is; name the CA of the client certificates, or the token issuer and its keys" }}
{{- end }}
{{- if and $v.gateway.auth.jwt.issuer (not $v.gateway.auth.jwt.keys) }}
{{- fail "gateway.auth.jwt.keys: tokens of an issuer are checked against its keys; list at least one" }}
{{- end }}
{{- if and $v.certManager.enabled (not $v.certManager.issuerRef.name) }}
{{- fail "certManager.issuerRef.name: the Issuer or ClusterIssuer that signs the gateway's certificate" }}
{{- end }}
{{- if and $v.rabbitmq.tls.enabled (not $v.rabbitmq.tls.caSecret) }}
{{- fail "rabbitmq.tls.caSecret: amqps:// trusts only the CA that signed the broker's certificate (docs/tls.md); name the Secret holding it" }}
{{- end }}
{{- if and (not $v.rabbitmq.tls.enabled) (not $dev) }}
{{- fail "rabbitmq.tls.enabled is false: plain AMQP carries tasks with personal data and the brokers' passwords in the clear; only a development cluster may, with development.plaintext: true" }}
{{- end }}
{{- if and (has $v.postgresql.tls.sslmode (list "disable" "prefer")) (not $dev) }}
{{- fail (printf "postgresql.tls.sslmode %s may connect without TLS; use require, verify-ca or verify-full (only a development cluster may, with development.plaintext: true)" $v.postgresql.tls.sslmode) }}
{{- end }}
{{- if and (has $v.postgresql.tls.sslmode (list "verify-ca" "verify-full")) (not $v.postgresql.tls.caSecret) }}
{{- fail (printf "postgresql.tls.caSecret: sslmode %s checks the server's certificate against a CA; name the Secret holding it" $v.postgresql.tls.sslmode) }}
{{- end }}
{{- if regexMatch "(^|\\s)(sslmode|sslrootcert|sslcert|sslkey)=" (toString $v.postgresql.extraParams) }}
{{- fail "postgresql.extraParams: the connection's TLS (sslmode, sslrootcert) is postgresql.tls, where it is checked; remove it from extraParams" }}
{{- end }}
{{- if and $v.networkPolicy.enabled (not $v.networkPolicy.grpcFrom) }}
{{- fail "networkPolicy.grpcFrom is empty: no window, platform or ingress could reach the gateway's gRPC port; list their peers (namespace or pod selectors, ipBlock CIDRs), or [{ipBlock: {cidr: 0.0.0.0/0}}] for anywhere" }}
{{- end }}
{{- $seen := dict }}
{{- range $code := include "yichuang.departments" . | fromJsonArray }}
{{- $user := include "yichuang.departmentUser" (dict "root" $ "code" $code) }}
{{- if hasKey $seen $user }}
{{- fail (printf "adapters.departments.%s.rabbitmq.user: %s is also %s's; each department's adapter needs a RabbitMQ user of its own, or one could speak for the other" $code $user (get $seen $user)) }}
{{- end }}
{{- $_ := set $seen $user $code }}
{{- end }}
{{- if $v.reporter.enabled }}
{{- include "yichuang.checkReporter" (dict "root" . "users" $seen) }}
{{- end }}
{{- if $v.notifier.enabled }}
{{- include "yichuang.checkNotifier" (dict "root" . "users" $seen) }}
{{- end }}
{{- end }}

{{/*
What the reporter needs (reporter.enabled), checked with the rest: a transport and its settings,
TLS to the platform unless development.plaintext, its own RabbitMQ user, and a way to prove its
platform role to the gateway. (dict "root" $ "users" <RabbitMQ user → department>).
*/}}
{{- define "yichuang.checkReporter" -}}
{{- $v := .root.Values }}
{{- $r := $v.reporter }}
{{- $t := $r.transport }}
{{- $dev := $v.development.plaintext }}
{{- if not $t.kind }}
{{- fail "reporter.transport.kind: how records reach the platform, http (its HTTP interface: reporter.transport.http) or tables (its exchange tables: reporter.transport.tables)" }}
{{- end }}
{{- if eq $t.kind "http" }}
{{- $h := $t.http }}
{{- range $k := list "recordUrl" "queryUrl" "appId" "existingSecret" }}
{{- if not (get $h $k) }}
{{- fail (printf "reporter.transport.http.%s: required with transport kind http (existingSecret: the Secret holding the app's signing secret)" $k) }}
{{- end }}
{{- end }}
{{- if and (not $dev) (or (hasPrefix "http://" $h.recordUrl) (hasPrefix "http://" $h.queryUrl)) }}
{{- fail "reporter.transport.http: plain http:// carries applicants' personal data in the clear; use https:// (only a development cluster may, with development.plaintext: true)" }}
{{- end }}
{{- else }}
{{- $tb := $t.tables }}
{{- range $k := list "url" "schema" "existingSecret" }}
{{- if not (get $tb $k) }}
{{- fail (printf "reporter.transport.tables.%s: required with transport kind tables (existingSecret: the Secret holding the exchange user's password)" $k) }}
{{- end }}
{{- end }}
{{- if not (regexMatch "^postgres(ql)?://[^:@/]+@" $tb.url) }}
{{- fail "reporter.transport.tables.url: write postgres://<user>@<host>:<port>/<database>?sslmode=verify-full, with the user and without the password (it comes from existingSecret)" }}
{{- end }}
{{- if regexMatch "[?&](sslrootcert|sslcert|sslkey)=" $tb.url }}
{{- fail "reporter.transport.tables.url: the database's CA is reporter.transport.tables.caSecret, added as sslrootcert; remove sslrootcert from the URL" }}
{{- end }}
{{- $mode := regexFind "[?&]sslmode=[a-z-]+" $tb.url | regexFind "[a-z-]+$" | default "prefer" }}
{{- if and (has $mode (list "disable" "allow" "prefer")) (not $dev) }}
{{- fail (printf "reporter.transport.tables.url: sslmode %s may connect without TLS; add sslmode=verify-full (or require, verify-ca) to the URL (only a development cluster may, with development.plaintext: true)" $mode) }}
{{- end }}
{{- if and (has $mode (list "verify-ca" "verify-full")) (not $tb.caSecret) }}
{{- fail (printf "reporter.transport.tables.caSecret: sslmode %s checks the database's certificate against a CA; name the Secret holding it" $mode) }}
{{- end }}
{{- end }}
{{- if not $r.rabbitmq.existingSecret }}
{{- fail "reporter.rabbitmq.existingSecret: the Secret with the reporter's RabbitMQ password (its own user, reporter.rabbitmq.user)" }}
{{- end }}
{{- with get .users $r.rabbitmq.user }}
{{- fail (printf "reporter.rabbitmq.user: %s is also the %s adapter's; the reporter needs a RabbitMQ user of its own" $r.rabbitmq.user .) }}
{{- end }}
{{- if $v.gateway.tls.enabled }}
{{- if not $v.gateway.tls.clientCA.existingSecret }}
{{- fail "reporter.enabled needs gateway.tls.clientCA.existingSecret: the reporter proves its platform role to the gateway with a client certificate (it has no bearer token)" }}
{{- end }}
{{- if and (not $r.gateway.caSecret) (not $v.certManager.enabled) }}
{{- fail "reporter.gateway.caSecret: the Secret holding the CA that signs the gateway's server certificate, which the reporter checks" }}
{{- end }}
{{- if and (not $r.gateway.clientCertificate.existingSecret) (not (and $v.certManager.enabled $r.gateway.clientCertificate.issuerRef.name)) }}
{{- fail "reporter.gateway.clientCertificate.existingSecret: the reporter's client certificate (a kubernetes.io/tls Secret, URI SAN urn:yichuang:platform), or certManager.enabled with reporter.gateway.clientCertificate.issuerRef.name to have one issued" }}
{{- end }}
{{- end }}
{{- if and $v.networkPolicy.enabled $v.networkPolicy.egress.enabled (not $r.network.cidrs) (not $v.networkPolicy.egress.reporter) }}
{{- fail "reporter.network.cidrs: with networkPolicy.egress.enabled the reporter reaches the platform only where this says; list its addresses (or rules in networkPolicy.egress.reporter)" }}
{{- end }}
{{- end }}

{{/*
What the notifier needs (notifier.enabled), checked with the rest: the SMS platform's URL over
https (unless development.plaintext), its account and secret, its own RabbitMQ user (neither an
adapter's nor the reporter's), and a way to prove its notifier role to the gateway.
(dict "root" $ "users" <RabbitMQ user → department>).
*/}}
{{- define "yichuang.checkNotifier" -}}
{{- $v := .root.Values }}
{{- $n := $v.notifier }}
{{- $dev := $v.development.plaintext }}
{{- range $k := list "url" "account" "existingSecret" }}
{{- if not (get $n.sms $k) }}
{{- fail (printf "notifier.sms.%s: required with notifier.enabled (url: the SMS platform's send interface; existingSecret: the Secret holding its secret)" $k) }}
{{- end }}
{{- end }}
{{- if and (not $dev) (not (hasPrefix "https://" $n.sms.url)) }}
{{- fail "notifier.sms.url: applicants' mobile numbers would cross the network in the clear; use https:// (only a development cluster may, with development.plaintext: true)" }}
{{- end }}
{{- if not $n.rabbitmq.existingSecret }}
{{- fail "notifier.rabbitmq.existingSecret: the Secret with the notifier's RabbitMQ password (its own user, notifier.rabbitmq.user)" }}
{{- end }}
{{- with get .users $n.rabbitmq.user }}
{{- fail (printf "notifier.rabbitmq.user: %s is also the %s adapter's; the notifier needs a RabbitMQ user of its own" $n.rabbitmq.user .) }}
{{- end }}
{{- if and $v.reporter.enabled (eq $n.rabbitmq.user $v.reporter.rabbitmq.user) }}
{{- fail (printf "notifier.rabbitmq.user: %s is also the reporter's; the notifier needs a RabbitMQ user of its own" $n.rabbitmq.user) }}
{{- end }}
{{- if $v.gateway.tls.enabled }}
{{- if not $v.gateway.tls.clientCA.existingSecret }}
{{- fail "notifier.enabled needs gateway.tls.clientCA.existingSecret: the notifier proves its notifier role to the gateway with a client certificate (it has no bearer token)" }}
{{- end }}
{{- if and (not $n.gateway.caSecret) (not $v.certManager.enabled) }}
{{- fail "notifier.gateway.caSecret: the Secret holding the CA that signs the gateway's server certificate, which the notifier checks" }}
{{- end }}
{{- if and (not $n.gateway.clientCertificate.existingSecret) (not (and $v.certManager.enabled $n.gateway.clientCertificate.issuerRef.name)) }}
{{- fail "notifier.gateway.clientCertificate.existingSecret: the notifier's client certificate (a kubernetes.io/tls Secret, URI SAN urn:yichuang:notifier), or certManager.enabled with notifier.gateway.clientCertificate.issuerRef.name to have one issued" }}
{{- end }}
{{- end }}
{{- if and $v.networkPolicy.enabled $v.networkPolicy.egress.enabled (not $n.network.cidrs) (not $v.networkPolicy.egress.notifier) }}
{{- fail "notifier.network.cidrs: with networkPolicy.egress.enabled the notifier reaches the SMS platform only where this says; list its addresses (or rules in networkPolicy.egress.notifier)" }}
{{- end }}
{{- end }}

{{/* The notifier's client certificate Secret: its own, or the one cert-manager issues. */}}
{{- define "yichuang.notifierClientSecret" -}}
{{- .Values.notifier.gateway.clientCertificate.existingSecret | default (printf "%s-notifier-client-tls" (include "yichuang.fullname" .)) }}
{{- end }}

{{/* The reporter's client certificate Secret: its own, or the one cert-manager issues. */}}
{{- define "yichuang.reporterClientSecret" -}}
{{- .Values.reporter.gateway.clientCertificate.existingSecret | default (printf "%s-reporter-client-tls" (include "yichuang.fullname" .)) }}
{{- end }}

{{/* Whether a department's file takes callbacks (a callbacks block): (dict "root" $ "code" "scjg"). */}}
{{- define "yichuang.takesCallbacks" -}}
{{- $d := index .root.Values.adapters.departments .code }}
{{- $text := $d.file | default (.root.Files.Get (printf "files/departments/%s.yaml" .code)) }}
{{- if regexMatch "(?m)^callbacks:" $text }}true{{ end }}
{{- end }}

{{/* The RabbitMQ user of a department's adapter: (dict "root" $ "code" "scjg"). */}}
{{- define "yichuang.departmentUser" -}}
{{- $d := index .root.Values.adapters.departments .code }}
{{- (and $d.rabbitmq $d.rabbitmq.user) | default (printf "adapter-%s" .code) }}
{{- end }}

{{/* The shared secrets of HS256 token keys, as gateway.toml's [[auth.jwt.keys]] name them. */}}
{{- define "yichuang.jwtEnv" -}}
{{- if .Values.gateway.auth.jwt.issuer }}
{{- range $i, $k := .Values.gateway.auth.jwt.keys }}
{{- if eq $k.algorithm "HS256" }}
- name: YICHUANG_JWT_SECRET_{{ $i }}
  valueFrom:
    secretKeyRef:
      name: {{ $k.existingSecret }}
      key: {{ $k.key | default "secret" }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The PostgreSQL user's name and password, from its Secret. */}}
{{- define "yichuang.pgEnv" -}}
- name: YICHUANG_PG_USER
  valueFrom:
    secretKeyRef:
      name: {{ required "postgresql.existingSecret: the Secret with the PostgreSQL user's name and password" .Values.postgresql.existingSecret }}
      key: {{ .Values.postgresql.usernameKey }}
- name: YICHUANG_PG_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.postgresql.existingSecret }}
      key: {{ .Values.postgresql.passwordKey }}
{{- end }}

{{/* The enabled departments, as a sorted list of codes. */}}
{{- define "yichuang.departments" -}}
{{- $codes := list }}
{{- range $code, $d := .Values.adapters.departments }}
{{- if not (regexMatch "^[a-z][a-z0-9]{0,19}$" $code) }}
{{- fail (printf "adapters.departments.%s: a department code is lower-case letters and digits, starting with a letter (at most 20)" $code) }}
{{- end }}
{{- if and $d (ne (toString $d.enabled) "false") }}
{{- $codes = append $codes $code }}
{{- end }}
{{- end }}
{{- $codes | sortAlpha | toJson }}
{{- end }}

{{/* Whether department (dict "root" $ "code" "scjg") has a demo simulator. */}}
{{- define "yichuang.simulated" -}}
{{- if and .root.Values.demo.enabled (hasKey .root.Values.demo.simulators .code) }}true{{ end }}
{{- end }}

{{/* The volumes of the configuration every process reads. */}}
{{- define "yichuang.configVolumes" -}}
- name: catalog
  configMap:
    name: {{ include "yichuang.fullname" . }}-catalog
- name: calendar
  configMap:
    name: {{ include "yichuang.fullname" . }}-calendar
- name: tmp
  emptyDir: {}
{{- end }}

{{- define "yichuang.configMounts" -}}
- name: catalog
  mountPath: /etc/yichuang/catalog
  readOnly: true
- name: calendar
  mountPath: /etc/yichuang/calendar
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Pod-level settings shared by every pod. */}}
{{- define "yichuang.podCommon" -}}
serviceAccountName: {{ include "yichuang.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Egress rules shared by every pod when egress is restricted: DNS and RabbitMQ. */}}
{{- define "yichuang.egressBase" -}}
- ports:
    - protocol: UDP
      port: 53
    - protocol: TCP
      port: 53
- ports:
    - protocol: TCP
      port: {{ .Values.rabbitmq.port }}
  {{- with .Values.networkPolicy.egress.rabbitmq }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{- define "yichuang.egressPostgres" -}}
- ports:
    {{- range (splitList "," (toString .Values.postgresql.port) | uniq) }}
    - protocol: TCP
      port: {{ trim . | int }}
    {{- end }}
  {{- with .Values.networkPolicy.egress.postgresql }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}

{{/* The [tracing] section of gateway.toml and adapter.toml, when spans are exported. */}}
{{- define "yichuang.tracing" -}}
{{- with .Values.tracing }}
{{- if .otlpEndpoint }}
[tracing]
otlp_endpoint = {{ .otlpEndpoint | toJson }}
sampling_ratio = {{ .samplingRatio | float64 }}
{{- end }}
{{- end }}
{{- end }}
