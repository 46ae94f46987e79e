package k8s_test

import (
	"net/http"
	"time"
)

var plainHTTP = &http.Client{Timeout: 2 * time.Second}

func httpGet(url string) (int, error) {
	resp, err := plainHTTP.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
