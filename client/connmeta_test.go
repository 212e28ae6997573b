package client

import (
	"fmt"
	"sync"
	"testing"
)

func TestConnMeta(t *testing.T) {
	var zero ConnMeta
	if zero.Map() != nil {
		t.Error("zero ConnMeta is not empty")
	}
	zero.Merge(map[string]any{"x": 1})
	if v, ok := zero.Get("x"); !ok || v != 1 {
		t.Errorf("zero ConnMeta after Merge: %v %v", v, ok)
	}

	initial := map[string]any{"hostname": "mx", "received_from": "192.0.2.1:25"}
	cm := NewConnMeta(initial)
	initial["hostname"] = "changed"
	snap := cm.Map()
	for _, tc := range []struct {
		name string
		do   func()
		key  string
		want any // nil: absent
	}{
		{"copied at creation", func() {}, "hostname", "mx"},
		{"set", func() { cm.Set("ehlo_domain", "client.example") }, "ehlo_domain", "client.example"},
		{"merge adds", func() { cm.Merge(map[string]any{"x_a": "1", "x_b": 2.0}) }, "x_b", 2.0},
		{"merge overwrites", func() { cm.Merge(map[string]any{"x_a": "2"}) }, "x_a", "2"},
		{"merge nil deletes", func() { cm.Merge(map[string]any{"x_a": nil}) }, "x_a", nil},
		{"set nil deletes", func() { cm.Set("x_b", nil) }, "x_b", nil},
		{"merge of nothing", func() { cm.Merge(nil) }, "hostname", "mx"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.do()
			v, ok := cm.Get(tc.key)
			if ok != (tc.want != nil) || v != tc.want {
				t.Errorf("Get(%q) = %v, %v; want %v", tc.key, v, ok, tc.want)
			}
		})
	}
	if len(snap) != 2 || snap["hostname"] != "mx" {
		t.Errorf("snapshot changed: %v", snap)
	}
}

func TestConnMetaConcurrent(t *testing.T) {
	cm := NewConnMeta(nil)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				key := fmt.Sprintf("x_%d", i%10)
				cm.Merge(map[string]any{key: i})
				cm.Set("g", g)
				for range cm.Map() {
				}
				cm.Get(key)
			}
		}()
	}
	wg.Wait()
	if n := len(cm.Map()); n != 11 {
		t.Errorf("%d keys, want 11", n)
	}
}
