-- wrk script: one-row Open Inference Protocol v2 requests for fraud-score's inputs,
-- random values (scripts/oip-load.sh).
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
request = function()
  local body = string.format('{"inputs":[{"name":"log_amount","shape":[1],"datatype":"FP64","data":[%f]},{"name":"hour_of_day","shape":[1],"datatype":"INT64","data":[%d]},{"name":"merchant_z","shape":[1],"datatype":"FP64","data":[%f]},{"name":"merchant_known","shape":[1],"datatype":"BOOL","data":[true]}]}', math.random() * 8, math.random(0, 23), math.random() * 4 - 2)
  return wrk.format(nil, nil, nil, body)
end
