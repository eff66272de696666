{{/* The release's name prefix of every object. */}}
{{- define "mlmesh.fullname" -}}
{{- printf "%s-mlmesh" .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object; "component" names the service. */}}
{{- define "mlmesh.labels" -}}
app.kubernetes.io/name: mlmesh
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/component: {{ .component }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/* What a Deployment's pods are selected by. */}}
{{- define "mlmesh.selector" -}}
app.kubernetes.io/name: mlmesh
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The mlmesh image, by tag; "latest" (or no tag) is refused: a rollout must name what it runs. */}}
{{- define "mlmesh.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if or (eq $tag "latest") (eq $tag "") -}}
{{- fail "image.tag must name a version, not \"latest\"" -}}
{{- end -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}

{{- define "mlmesh.tlsSecret" -}}
{{- .Values.tls.secretName | default (printf "%s-tls" (include "mlmesh.fullname" .)) -}}
{{- end -}}

{{- define "mlmesh.databaseSecret" -}}
{{- if .Values.postgresql.external.existingSecret -}}
{{- .Values.postgresql.external.existingSecret -}}
{{- else -}}
{{- printf "%s-database" (include "mlmesh.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
A service's Deployment. Arguments: root (the chart's context), name (the mlmesh service and the
Kubernetes Service's name: envoy/envoy.yaml dials services by these names), component settings
(values of the service), args, readiness (the gRPC health service a pod is ready for: a
Predictor only once its models are loaded), env (extra variables), database (the variable that
takes the database Secret's URL, if any), dataClaim (a PersistentVolumeClaim for /app/data),
envFrom (Secrets whose keys become variables).
*/}}
{{- define "mlmesh.deployment" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $port := int .settings.port -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .name }}
  labels:
    {{- include "mlmesh.labels" (dict "root" $root "component" .name) | nindent 4 }}
spec:
  {{- if not .autoscaled }}
  replicas: {{ .settings.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "mlmesh.selector" (dict "root" $root "component" .name) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "mlmesh.selector" (dict "root" $root "component" .name) | nindent 8 }}
    spec:
      automountServiceAccountToken: false
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      # SIGTERM drains: in-flight calls finish within SHUTDOWN_GRACE (4 s) before connections are cut.
      terminationGracePeriodSeconds: 15
      containers:
        - name: {{ .name }}
          image: {{ include "mlmesh.image" $root }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args: {{ toJson .args }}
          ports:
            - name: grpc
              containerPort: {{ $port }}
              protocol: TCP
          {{- with .envFrom }}
          envFrom:
            {{- range . }}
            - secretRef:
                name: {{ . }}
            {{- end }}
          {{- end }}
          env:
            - name: HOST
              value: "0.0.0.0"
            - name: {{ .portVariable }}
              value: {{ $port | quote }}
            {{- range $key, $value := $v.env }}
            - name: {{ $key }}
              value: {{ $value | quote }}
            {{- end }}
            {{- with .database }}
            - name: {{ . }}
              valueFrom:
                secretKeyRef:
                  name: {{ include "mlmesh.databaseSecret" $root }}
                  key: {{ $v.postgresql.external.key }}
            {{- end }}
            {{- if $v.tls.enabled }}
            - name: TLS_CERT_FILE
              value: /secrets/tls/tls.crt
            - name: TLS_KEY_FILE
              value: /secrets/tls/tls.key
            - name: TLS_CA_FILE
              value: /secrets/tls/ca.crt
            {{- end }}
            {{- if $v.auth.enabled }}
            - name: AUTH_TOKENS_FILE
              value: /secrets/auth/tokens
            - name: MESH_TOKEN_FILE
              value: /secrets/auth/mesh-{{ .tokenName | default .name }}.token
            {{- end }}
            {{- range $key, $value := .env }}
            - name: {{ $key }}
              value: {{ $value | quote }}
            {{- end }}
          resources:
            {{- toYaml .settings.resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.containerSecurityContext | nindent 12 }}
          {{- /* The kubelet's gRPC probe speaks plaintext only: over TLS, `mlmesh health` asks instead. */}}
          startupProbe:
            {{- include "mlmesh.probe" (dict "root" $root "port" $port "service" "") | nindent 12 }}
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            {{- include "mlmesh.probe" (dict "root" $root "port" $port "service" "") | nindent 12 }}
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            {{- include "mlmesh.probe" (dict "root" $root "port" $port "service" .readiness) | nindent 12 }}
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: data
              mountPath: /app/data
            {{- if $v.tls.enabled }}
            - name: tls
              mountPath: /secrets/tls
              readOnly: true
            {{- end }}
            {{- if $v.auth.enabled }}
            - name: auth
              mountPath: /secrets/auth
              readOnly: true
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {}
        {{- if .dataClaim }}
        - name: data
          persistentVolumeClaim:
            claimName: {{ .dataClaim }}
        {{- else }}
        - name: data
          emptyDir: {}
        {{- end }}
        {{- if $v.tls.enabled }}
        - name: tls
          secret:
            secretName: {{ include "mlmesh.tlsSecret" $root }}
        {{- end }}
        {{- if $v.auth.enabled }}
        - name: auth
          secret:
            secretName: {{ required "auth.existingSecret names the Secret of tokens when auth.enabled" $v.auth.existingSecret }}
        {{- end }}
{{- end -}}

{{/* A probe of grpc.health.v1 for `service` on `port`. */}}
{{- define "mlmesh.probe" -}}
{{- if .root.Values.tls.enabled -}}
exec:
  command: ["node", "bin/mlmesh.js", "health", "127.0.0.1:{{ .port }}", {{ .service | quote }}]
{{- else -}}
grpc:
  port: {{ .port }}
  service: {{ .service | quote }}
{{- end -}}
{{- end -}}

{{/* The Service in front of a Deployment, named as the mlmesh service. */}}
{{- define "mlmesh.service" -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ .name }}
  labels:
    {{- include "mlmesh.labels" (dict "root" .root "component" .name) | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "mlmesh.selector" (dict "root" .root "component" .name) | nindent 4 }}
  ports:
    - name: grpc
      port: {{ .port }}
      targetPort: grpc
      protocol: TCP
      {{- if not .root.Values.tls.enabled }}
      appProtocol: kubernetes.io/h2c
      {{- end }}
{{- end -}}

{{/* A PodDisruptionBudget for a Deployment. */}}
{{- define "mlmesh.pdb" -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  labels:
    {{- include "mlmesh.labels" (dict "root" .root "component" .name) | nindent 4 }}
spec:
  minAvailable: {{ .pdb.minAvailable }}
  selector:
    matchLabels:
      {{- include "mlmesh.selector" (dict "root" .root "component" .name) | nindent 6 }}
{{- end -}}
