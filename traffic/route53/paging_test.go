package route53

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// TestPoolFollowsPagesWithinASet covers what moto_server cannot: it ignores
// StartRecordIdentifier, so a set larger than one page cannot be listed against it. This
// server pages like Route 53 does, by name, type and set identifier.
func TestPoolFollowsPagesWithinASet(t *testing.T) {
	type rec struct{ name, typ, id string }
	zone := []rec{
		{"api.example.com.", "A", "a"}, {"api.example.com.", "A", "b"}, {"api.example.com.", "A", "c"},
		{"api.example.com.", "A", "d"}, {"api.example.com.", "A", "e"},
		{"api.example.com.", "AAAA", "a"}, {"b.example.com.", "A", "x"},
	}
	var pages atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if !strings.HasSuffix(r.URL.Path, "/rrset") {
			http.Error(w, "unexpected "+r.URL.Path, http.StatusBadRequest)
			return
		}
		if strings.HasPrefix(q.Get("name"), "_verdict.") {
			fmt.Fprint(w, `<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ResourceRecordSets></ResourceRecordSets><IsTruncated>false</IsTruncated><MaxItems>1</MaxItems></ListResourceRecordSetsResponse>`)
			return
		}
		pages.Add(1)
		maxItems, _ := strconv.Atoi(q.Get("maxitems"))
		i := 0
		for i < len(zone) && !(zone[i].name == q.Get("name") && zone[i].typ == q.Get("type") && (q.Get("identifier") == "" || zone[i].id >= q.Get("identifier"))) {
			i++
		}
		var b strings.Builder
		b.WriteString(`<ListResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ResourceRecordSets>`)
		end := min(i+maxItems, len(zone))
		for _, z := range zone[i:end] {
			fmt.Fprintf(&b, `<ResourceRecordSet><Name>%s</Name><Type>%s</Type><SetIdentifier>%s</SetIdentifier><Weight>10</Weight><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>10.0.0.1</Value></ResourceRecord></ResourceRecords></ResourceRecordSet>`, z.name, z.typ, z.id)
		}
		b.WriteString(`</ResourceRecordSets>`)
		if end < len(zone) {
			n := zone[end]
			fmt.Fprintf(&b, `<IsTruncated>true</IsTruncated><NextRecordName>%s</NextRecordName><NextRecordType>%s</NextRecordType><NextRecordIdentifier>%s</NextRecordIdentifier>`, n.name, n.typ, n.id)
		} else {
			b.WriteString(`<IsTruncated>false</IsTruncated>`)
		}
		fmt.Fprintf(&b, `<MaxItems>%d</MaxItems></ListResourceRecordSetsResponse>`, maxItems)
		w.Header().Set("Content-Type", "text/xml")
		fmt.Fprint(w, b.String())
	}))
	defer srv.Close()
	s, err := New(context.Background(), Options{Endpoint: srv.URL, Credentials: testCreds, HTTPClient: srv.Client(), PageSize: 2})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Pool(context.Background(), Ref("Z1", "api.example.com", "A"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, o := range p.Origins {
		ids = append(ids, o.Name)
	}
	if strings.Join(ids, ",") != "a,b,c,d,e" {
		t.Errorf("origins = %v, want a..e", ids)
	}
	if n := pages.Load(); n != 3 {
		t.Errorf("pages read = %d, want 3", n)
	}
}
