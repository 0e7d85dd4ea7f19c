# sockwarden-operator: a static (musl) binary on an empty image, run as a non-root user.
# Built by scripts/images.sh.
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY sockwarden-operator /sockwarden-operator
USER 65532:65532
ENTRYPOINT ["/sockwarden-operator"]
