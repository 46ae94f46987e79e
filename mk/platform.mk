# Healthcare sample platform (issue 7): the records API binary, its portal, the platform tests.

BINARIES += records=./sample-apps/records/cmd/records
