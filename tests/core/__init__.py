"""udf.channel, udf.lifecycle, udf.options, udf.address: the small pure modules."""
