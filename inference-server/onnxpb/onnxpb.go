// Package onnxpb writes ONNX model files (the onnx.proto3 ModelProto) by hand with protowire, for
// the small set of messages a feed-forward graph needs: model, graph, nodes, attributes, float
// initializers and tensor value infos. Field numbers follow onnx/onnx.proto (IR version 8).
//
// Fields are written in a fixed order, so the same model always encodes to the same bytes.
package onnxpb

import (
	"encoding/binary"
	"math"

	"google.golang.org/protobuf/encoding/protowire"
)

// TensorProto.DataType values used here.
const (
	DataTypeFloat = 1
	DataTypeInt64 = 7
)

// Model is an ONNX ModelProto.
type Model struct {
	IRVersion       int64
	ProducerName    string
	ProducerVersion string
	Domain          string
	ModelVersion    int64
	DocString       string
	Graph           Graph
	Opsets          []Opset
	Metadata        [][2]string // metadata_props, key/value pairs in order
}

// Opset is an OperatorSetIdProto.
type Opset struct {
	Domain  string
	Version int64
}

// Graph is a GraphProto.
type Graph struct {
	Name         string
	Nodes        []Node
	Initializers []Tensor
	Inputs       []ValueInfo
	Outputs      []ValueInfo
}

// Node is a NodeProto.
type Node struct {
	Name    string
	OpType  string
	Inputs  []string
	Outputs []string
	Attrs   []Attr
}

// Attr is an AttributeProto holding an int, a float or a list of ints.
type Attr struct {
	Name  string
	Int   *int64
	Float *float32
	Ints  []int64
}

// IntAttr and IntsAttr build attributes.
func IntAttr(name string, v int64) Attr     { return Attr{Name: name, Int: &v} }
func IntsAttr(name string, v ...int64) Attr { return Attr{Name: name, Ints: v} }

// Tensor is a float32 TensorProto initializer stored as raw little-endian data.
type Tensor struct {
	Name string
	Dims []int64
	Data []float32
}

// ValueInfo is a ValueInfoProto for a tensor: a dimension is either a fixed size or, when
// Param is non-empty, a named symbolic dimension.
type ValueInfo struct {
	Name     string
	ElemType int32
	Dims     []Dim
}

// Dim is one dimension of a ValueInfo.
type Dim struct {
	Value int64
	Param string
}

// Marshal encodes the model.
func (m *Model) Marshal() []byte {
	var b []byte
	b = appendInt(b, 1, m.IRVersion)
	b = appendString(b, 2, m.ProducerName)
	b = appendString(b, 3, m.ProducerVersion)
	b = appendString(b, 4, m.Domain)
	b = appendInt(b, 5, m.ModelVersion)
	b = appendString(b, 6, m.DocString)
	b = appendMsg(b, 7, m.Graph.marshal())
	for _, o := range m.Opsets {
		var ob []byte
		ob = appendString(ob, 1, o.Domain)
		ob = appendInt(ob, 2, o.Version)
		b = appendMsg(b, 8, ob)
	}
	for _, kv := range m.Metadata {
		var e []byte
		e = appendString(e, 1, kv[0])
		e = appendString(e, 2, kv[1])
		b = appendMsg(b, 14, e)
	}
	return b
}

func (g *Graph) marshal() []byte {
	var b []byte
	for i := range g.Nodes {
		b = appendMsg(b, 1, g.Nodes[i].marshal())
	}
	b = appendString(b, 2, g.Name)
	for i := range g.Initializers {
		b = appendMsg(b, 5, g.Initializers[i].marshal())
	}
	for i := range g.Inputs {
		b = appendMsg(b, 11, g.Inputs[i].marshal())
	}
	for i := range g.Outputs {
		b = appendMsg(b, 12, g.Outputs[i].marshal())
	}
	return b
}

func (n *Node) marshal() []byte {
	var b []byte
	for _, in := range n.Inputs {
		b = appendStringAlways(b, 1, in)
	}
	for _, out := range n.Outputs {
		b = appendStringAlways(b, 2, out)
	}
	b = appendString(b, 3, n.Name)
	b = appendString(b, 4, n.OpType)
	for _, a := range n.Attrs {
		b = appendMsg(b, 5, a.marshal())
	}
	return b
}

// AttributeProto.AttributeType values.
const (
	attrFloat = 1
	attrInt   = 2
	attrInts  = 7
)

func (a *Attr) marshal() []byte {
	var b []byte
	b = appendString(b, 1, a.Name)
	switch {
	case a.Float != nil:
		b = protowire.AppendTag(b, 2, protowire.Fixed32Type)
		b = protowire.AppendFixed32(b, math.Float32bits(*a.Float))
		b = appendInt(b, 20, attrFloat)
	case a.Int != nil:
		b = protowire.AppendTag(b, 3, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(*a.Int))
		b = appendInt(b, 20, attrInt)
	default:
		var packed []byte
		for _, v := range a.Ints {
			packed = protowire.AppendVarint(packed, uint64(v))
		}
		b = appendMsg(b, 8, packed)
		b = appendInt(b, 20, attrInts)
	}
	return b
}

func (t *Tensor) marshal() []byte {
	var b []byte
	var dims []byte
	for _, d := range t.Dims {
		dims = protowire.AppendVarint(dims, uint64(d))
	}
	b = appendMsg(b, 1, dims)
	b = appendInt(b, 2, DataTypeFloat)
	b = appendString(b, 8, t.Name)
	raw := make([]byte, 4*len(t.Data))
	for i, v := range t.Data {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(v))
	}
	b = protowire.AppendTag(b, 9, protowire.BytesType)
	b = protowire.AppendBytes(b, raw)
	return b
}

func (v *ValueInfo) marshal() []byte {
	var shape []byte
	for _, d := range v.Dims {
		var db []byte
		if d.Param != "" {
			db = appendString(db, 2, d.Param)
		} else {
			db = protowire.AppendTag(db, 1, protowire.VarintType)
			db = protowire.AppendVarint(db, uint64(d.Value))
		}
		shape = appendMsg(shape, 1, db)
	}
	var tt []byte
	tt = appendInt(tt, 1, int64(v.ElemType))
	tt = protowire.AppendTag(tt, 2, protowire.BytesType)
	tt = protowire.AppendBytes(tt, shape)
	var typ []byte
	typ = protowire.AppendTag(typ, 1, protowire.BytesType)
	typ = protowire.AppendBytes(typ, tt)
	var b []byte
	b = appendString(b, 1, v.Name)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, typ)
	return b
}

// appendInt writes a varint field, omitting zero (proto3 default).
func appendInt(b []byte, num protowire.Number, v int64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(v))
}

// appendString writes a string field, omitting the empty string (proto3 default).
func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return appendStringAlways(b, num, s)
}

// appendStringAlways writes a string field even when empty (repeated fields keep positions).
func appendStringAlways(b []byte, num protowire.Number, s string) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

func appendMsg(b []byte, num protowire.Number, msg []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, msg)
}
