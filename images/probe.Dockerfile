# sockwarden-probe: a static (musl) binary on an empty image. Built by scripts/images.sh.
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY sockwarden-probe /sockwarden-probe
ENTRYPOINT ["/sockwarden-probe"]
