module eremite.example/go

go 1.19
