"""Run ipyparallel's controller with the arguments the kernel's launcher gives it."""

from mxnb.protocol.ippimport import import_ipyparallel

if __name__ == "__main__":
    import_ipyparallel("ipyparallel.controller.app").main()
