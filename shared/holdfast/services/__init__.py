"""Services: one use case per unit of work (`Database.run`), the only place that commits."""
