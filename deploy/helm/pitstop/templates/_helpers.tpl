{{/* Every Pitstop and Dask container gets the same settings (ConfigMap) and secrets (Secret). */}}
{{- define "pitstop.env" -}}
envFrom:
  - configMapRef:
      name: {{ .Release.Name }}-settings
  - secretRef:
      name: {{ .Release.Name }}-secrets
{{- end -}}

{{- define "pitstop.image" -}}
image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"
imagePullPolicy: {{ .Values.image.pullPolicy }}
{{- end -}}

{{- define "pitstop.labels" -}}
app.kubernetes.io/name: pitstop
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
