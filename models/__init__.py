"""Model families: one module per family, one config file per family in conf/model/."""
