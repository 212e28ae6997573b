# Images for rewrited, the example SMTP frontend and rewrited-proxy, FROM scratch: no shell,
# no CA certificates, no /etc/passwd, only a static binary. Build the
# binaries first (CGO_ENABLED=0) into bin/image/; `make images` does both steps:
#
#   make images                       # rewrited:dev and rewrited-frontend:dev
#   docker build --target rewrited -t rewrited:dev .
#   docker build --target frontend -t rewrited-frontend:dev .
#   docker build --target proxy -t rewrited-proxy:dev .
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

# rewrited-proxy: an SMTP proxy in front of any MTA (see docs/proxy.md).
FROM scratch AS proxy
LABEL io.rewrited.image=proxy
COPY bin/image/rewrited-proxy /rewrited-proxy
USER 65532:65532
# 2525: SMTP; 9091: Prometheus /metrics.
EXPOSE 2525 9091
ENTRYPOINT ["/rewrited-proxy"]
CMD ["--listen", ":2525", "--backend", "mta:25", "--rewrited", "dns:///rewrited:7070", "--metrics-listen", ":9091"]
