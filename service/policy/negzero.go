package policy

import (
	"strings"

	"github.com/yuin/gopher-lua/ast"
)

// keepNegativeZero makes negated zero literals read as in Lua 5.4. gopher-lua's
// compiler folds -0.0 into a constant and shares one constant slot between
// values that compare equal, so 0 and -0.0 in one function would read as
// whichever came first. A negated float zero (-0.0, -0e0, -0x0p0) is rewritten
// to negate the string "0" when it runs: a string operand is neither folded
// nor shared, and the virtual machine's unary minus converts it to the float 0
// before negating. A negated integer zero is the integer 0 in Lua 5.4, so its
// minus is dropped.
func keepNegativeZero(chunk []ast.Stmt) {
	negZeroStmts(chunk)
}

// zeroNumeral reports whether a numeral's value is zero, and whether it is a
// float (a decimal point or an exponent).
func zeroNumeral(numeral string) (zero, float bool) {
	n := strings.ToLower(numeral)
	digits, exp := n, ""
	if rest, hex := strings.CutPrefix(n, "0x"); hex {
		digits = rest
		if i := strings.IndexByte(digits, 'p'); i >= 0 {
			digits, exp = digits[:i], digits[i:]
		}
	} else if i := strings.IndexByte(n, 'e'); i >= 0 {
		digits, exp = n[:i], n[i:]
	}
	zero = strings.Trim(digits, "0.") == "" && strings.Contains(digits, "0")
	return zero, exp != "" || strings.Contains(digits, ".")
}

func negZeroExprs(exprs []ast.Expr) {
	for i, e := range exprs {
		exprs[i] = negZeroExpr(e)
	}
}

func negZeroStmts(stmts []ast.Stmt) {
	for _, s := range stmts {
		negZeroStmt(s)
	}
}

func negZeroStmt(s ast.Stmt) {
	switch s := s.(type) {
	case *ast.AssignStmt:
		negZeroExprs(s.Lhs)
		negZeroExprs(s.Rhs)
	case *ast.LocalAssignStmt:
		negZeroExprs(s.Exprs)
	case *ast.FuncCallStmt:
		s.Expr = negZeroExpr(s.Expr)
	case *ast.DoBlockStmt:
		negZeroStmts(s.Stmts)
	case *ast.WhileStmt:
		s.Condition = negZeroExpr(s.Condition)
		negZeroStmts(s.Stmts)
	case *ast.RepeatStmt:
		s.Condition = negZeroExpr(s.Condition)
		negZeroStmts(s.Stmts)
	case *ast.IfStmt:
		s.Condition = negZeroExpr(s.Condition)
		negZeroStmts(s.Then)
		negZeroStmts(s.Else)
	case *ast.NumberForStmt:
		s.Init, s.Limit, s.Step = negZeroExpr(s.Init), negZeroExpr(s.Limit), negZeroExpr(s.Step)
		negZeroStmts(s.Stmts)
	case *ast.GenericForStmt:
		negZeroExprs(s.Exprs)
		negZeroStmts(s.Stmts)
	case *ast.FuncDefStmt:
		negZeroStmts(s.Func.Stmts)
	case *ast.ReturnStmt:
		negZeroExprs(s.Exprs)
	}
}

// negZeroExpr returns e with its negated zero literals rewritten.
func negZeroExpr(e ast.Expr) ast.Expr {
	switch e := e.(type) {
	case *ast.UnaryMinusOpExpr:
		if n, ok := e.Expr.(*ast.NumberExpr); ok {
			switch zero, float := zeroNumeral(n.Value); {
			case zero && float:
				s := &ast.StringExpr{Value: "0"}
				s.SetLine(n.Line())
				s.SetLastLine(n.LastLine())
				e.Expr = s
				return e
			case zero:
				return n
			}
		}
		e.Expr = negZeroExpr(e.Expr)
	case *ast.UnaryNotOpExpr:
		e.Expr = negZeroExpr(e.Expr)
	case *ast.UnaryLenOpExpr:
		e.Expr = negZeroExpr(e.Expr)
	case *ast.AttrGetExpr:
		e.Object, e.Key = negZeroExpr(e.Object), negZeroExpr(e.Key)
	case *ast.TableExpr:
		for _, f := range e.Fields {
			f.Key, f.Value = negZeroExpr(f.Key), negZeroExpr(f.Value)
		}
	case *ast.FuncCallExpr:
		e.Func, e.Receiver = negZeroExpr(e.Func), negZeroExpr(e.Receiver)
		negZeroExprs(e.Args)
	case *ast.LogicalOpExpr:
		e.Lhs, e.Rhs = negZeroExpr(e.Lhs), negZeroExpr(e.Rhs)
	case *ast.RelationalOpExpr:
		e.Lhs, e.Rhs = negZeroExpr(e.Lhs), negZeroExpr(e.Rhs)
	case *ast.StringConcatOpExpr:
		e.Lhs, e.Rhs = negZeroExpr(e.Lhs), negZeroExpr(e.Rhs)
	case *ast.ArithmeticOpExpr:
		e.Lhs, e.Rhs = negZeroExpr(e.Lhs), negZeroExpr(e.Rhs)
	case *ast.FunctionExpr:
		negZeroStmts(e.Stmts)
	}
	return e
}
