# Images for rewrited and the example SMTP frontend, FROM scratch: no shell,
# no CA certificates, no /etc/passwd, only a static binary. Build the
# binaries first (CGO_ENABLED=0) into bin/image/; `make images` does both steps:
#
#   make images                       # rewrited:dev and rewrited-frontend:dev
#   docker build --target rewrited -t rewrited:dev .
#   docker build --target frontend -t rewrited-frontend:dev .
#
# .dockerignore keeps the build context to bin/image/.

FROM scratch AS rewrited
# The label lets `make images` prune this image's superseded builds.
LABEL io.rewrited.image=rewrited
COPY bin/image/rewrited /rewrited
# Numeric, since there is no /etc/passwd; matches runAsUser in deploy/kubernetes.
USER 65532:65532
# 7070: gRPC (rewrite, health, reflection); 9090: Prometheus /metrics.
EXPOSE 7070 9090
ENTRYPOINT ["/rewrited"]
# Without arguments the image serves the bundled example policy; mount a
# policy folder and pass --policy-dir to serve yours.
CMD ["serve", "--listen", ":7070", "--metrics-listen", ":9090", "--log-format", "json"]

FROM scratch AS frontend
LABEL io.rewrited.image=frontend
COPY bin/image/smtp-frontend /smtp-frontend
USER 65532:65532
EXPOSE 2525
ENTRYPOINT ["/smtp-frontend"]
CMD ["--listen", ":2525", "--rewrited", "dns:///rewrited:7070"]
